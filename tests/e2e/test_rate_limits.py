"""Rate limits enforced by the router across `ngm serve` processes sharing PostgreSQL and Redis: exact
totals per window from four instances, per-user isolation, no quota spent by refused requests, token
bucket bursts, headers, changes reaching every instance within a second, the management API's per-key
limit, and both Redis failure policies with a Redis of the test's own that it kills and restarts."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.e2e.conftest import make_key
from tests.support.processes import REDIS_URL, ServerProcess, ngm_env
from tests.support.redis_server import PrivateRedis
from tests.support.standin import StandIn
from tests.support.waiting import room_in_window, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
ENV = {"X-NGM-Environment": "production"}


def start_servers(count: int, env: dict, tmp_path, name: str) -> list[ServerProcess]:
    servers = [ServerProcess(env, tmp_path / f"{name}-{i}.log") for i in range(count)]
    return [s.wait_ready() for s in servers]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database_factory):
    tmp = tmp_path_factory.mktemp("ratelimits")
    url = pg_database_factory()
    env = ngm_env(tmp / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR="off",
                  NGM_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    servers = start_servers(4, env, tmp, "node")
    standin = StandIn("healthy")
    yield {"servers": servers, "url": url, "standin": standin}
    for s in servers:
        s.stop()
    standin.stop()


def deploy(server, key, standin, agent, **limits) -> dict:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as c:
        gw = c.post("/api/v1/gateways", json={"name": f"gw-{agent}", "environment": "production",
                                              "api_url": standin.url, **limits})
        assert gw.status_code == 201, gw.text
        dep = c.post("/api/v1/deployments", json={"gateway_id": gw.json()["id"], "agent_id": agent,
                                                  "agent_version": "v1"})
        assert dep.status_code == 201, dep.text
    return gw.json()


def invoke(server, key, agent, client=None):
    c = client or httpx
    return c.get(f"{server.url}/api/v1/agents/{agent}/invoke/health", headers={"X-API-Key": key, **ENV}, timeout=10)


def wait_window_start(window: float, after: float = 0.05) -> float:
    """Sleep to just after the next boundary of `window`-second windows (Redis keeps time on this host)."""
    now = time.time()
    start = (now // window + 1) * window
    time.sleep(start + after - now)
    return start


def hammer_one_window(servers, key: str, agent: str, window: float) -> list[int]:
    """16 clients over the four instances from the start of a window to half a second before its end."""
    start = wait_window_start(window)
    stop_at = start + window - 0.5
    statuses: list[int] = []
    lock = threading.Lock()

    def hammer(n: int):
        with httpx.Client() as client:
            while time.time() < stop_at:
                code = invoke(servers[n % 4], key, agent, client).status_code
                with lock:
                    statuses.append(code)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(hammer, range(16)))
    return statuses


def hammer_with_redis_answering(servers, key: str, agent: str, window: float) -> list[int]:
    """hammer_one_window, in a window where Redis answered every instance in time. A check that waits over
    250 ms for Redis is decided locally (limit / live instances), by design: availability before exactness.
    On a machine loaded enough for that, the window proves nothing about exactness and is run again (twice
    at most); a window where Redis answered throughout must be exact."""
    def fallbacks() -> int:
        return sum(limiter_status(s)["decided_locally"] for s in servers)

    for _ in range(3):
        before = fallbacks()
        statuses = hammer_one_window(servers, key, agent, window)
        if fallbacks() == before:
            return statuses
    raise AssertionError("Redis was too slow to answer in three windows running: exactness not tested")


def test_four_instances_admit_exactly_the_limit_per_window(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-exact")
    limit, window = 40, 4.0
    deploy(servers[0], key, standin, "exact", global_rate_limit=limit, rate_limit_window=window)
    time.sleep(1.2)  # every instance has the deployment and its limits by now (they promise < 1 s)
    statuses = hammer_with_redis_answering(servers, key, "exact", window)
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) == limit, (statuses.count(200), len(statuses))  # none over, none short
    assert statuses.count(429) > limit  # demand was well above the limit


def test_busy_instances_lease_quota_and_still_admit_exactly_the_limit(cluster):
    """A limit with room for leases (busy instances take a few units at a time: leases.py): still exactly N."""
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-leases")
    limit, window = 1200, 8.0
    deploy(servers[0], key, standin, "leases", global_rate_limit=limit, rate_limit_window=window)
    time.sleep(1.2)
    # A lease needs LEASE_MIN requests of the scope on one instance within 0.1 s: on a machine loaded enough that
    # no instance saw that, the window proves nothing about leases and is run again (twice at most). Every window
    # run must be exact.
    for _ in range(3):
        granted_before = sum(limiter_status(s)["leases_granted"] for s in servers)
        statuses = hammer_with_redis_answering(servers, key, "leases", window)
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) == limit, (statuses.count(200), len(statuses))
        assert statuses.count(429) > 100
        if sum(limiter_status(s)["leases_granted"] for s in servers) > granted_before:
            return
    raise AssertionError("no instance was busy enough for a lease in three windows running: leases not tested")


def test_users_are_isolated_and_refused_requests_spend_no_quota(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    alice = make_key(cluster["url"], "rl-users")
    with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": alice}) as c:
        bob = c.post("/api/v1/keys", json={"role": "org_member", "name": "bob"}).json()["key"]
    gw = deploy(servers[0], alice, standin, "users", global_rate_limit=100, per_agent_rate_limit=50,
                per_user_rate_limit=5, rate_limit_window=60)
    time.sleep(1.2)
    room_in_window(60, room=10)
    alice_codes = [invoke(servers[i % 4], alice, "users").status_code for i in range(8)]
    bob_codes = [invoke(servers[i % 4], bob, "users").status_code for i in range(5)]
    assert alice_codes == [200] * 5 + [429] * 3
    assert bob_codes == [200] * 5  # Alice's refusals did not touch Bob's quota
    with httpx.Client(base_url=servers[2].url, headers={"X-API-Key": alice}) as c:
        shown = c.get(f"/api/v1/gateways/{gw['id']}/rate-limits").json()
    assert shown["gateway"]["used"] == 10 and shown["gateway"]["remaining"] == 90  # not 13: refusals not counted
    assert [(a["agent_id"], a["used"]) for a in shown["agents"]] == [("users", 10)]
    assert sorted(u["used"] for u in shown["users"]) == [5, 5]
    assert shown["rejected"] == {"gateway": 0, "agent": 0, "user": 3}


def test_headers_on_allowed_and_refused_requests(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-headers")
    deploy(servers[0], key, standin, "headers", global_rate_limit=1000, per_user_rate_limit=3, rate_limit_window=30)
    time.sleep(1.2)
    room_in_window(30, room=10)
    allowed = [invoke(servers[1], key, "headers") for _ in range(3)]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining"] for r in allowed] == ["2", "1", "0"]
    first = allowed[0].headers
    assert first["x-ratelimit-limit"] == "3" and 0 < int(first["x-ratelimit-reset"]) <= 30
    assert first["ratelimit-policy"] == '"gateway";q=1000;w=30, "user";q=3;w=30'
    assert first["ratelimit"].startswith('"user";r=2;t=') and "retry-after" not in first
    refused = invoke(servers[3], key, "headers")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and [d["scope"] for d in error["details"]] == ["user"]
    h = refused.headers
    assert h["x-ratelimit-remaining"] == "0" and h["x-ratelimit-limit"] == "3"
    assert 0 < int(h["retry-after"]) <= 60 and h["retry-after"] == h["x-ratelimit-reset"]
    assert h["ratelimit"] == f'"user";r=0;t={h["retry-after"]}' and h["x-request-id"]

    def rejections_seen():  # instances publish their traffic figures every half second
        traffic = httpx.get(f"{servers[0].url}/api/v1/agents/headers/traffic", params={"environment": "production"},
                            headers={"X-API-Key": key}).json()
        return sum(d["rate_limited"] for d in traffic["deployments"]) == 1

    wait_for(rejections_seen, 3, "the refusal in the agent's traffic figures")


def test_token_bucket_allows_its_burst_then_the_steady_rate(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-bucket")
    deploy(servers[0], key, standin, "bucket", per_agent_rate_limit=10, rate_limit_window=10,
           rate_limit_algorithm="token_bucket", rate_limit_burst=3)  # 1 a second, 3 at once
    time.sleep(1.2)
    assert [invoke(servers[i % 4], key, "bucket").status_code for i in range(5)] == [200, 200, 200, 429, 429]
    time.sleep(1.1)
    assert [invoke(servers[i % 4], key, "bucket").status_code for i in range(2)] == [200, 429]


def test_a_changed_limit_reaches_every_instance_within_a_second(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-change")
    gw = deploy(servers[0], key, standin, "change", global_rate_limit=1000, rate_limit_window=60)
    time.sleep(1.2)
    assert invoke(servers[3], key, "change").headers["x-ratelimit-limit"] == "1000"
    with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": key}) as c:
        assert c.put(f"/api/v1/gateways/{gw['id']}/rate-limits", json={"global_rate_limit": 777}).status_code == 200
    changed = time.monotonic()
    seen = {}
    while len(seen) < 4 and time.monotonic() - changed < 3:
        for i, s in enumerate(servers):
            if i not in seen and invoke(s, key, "change").headers.get("x-ratelimit-limit") == "777":
                seen[i] = time.monotonic() - changed
    assert len(seen) == 4 and max(seen.values()) < 1.0, seen


def test_management_api_has_a_per_key_limit(cluster):
    servers = cluster["servers"]
    owner = make_key(cluster["url"], "rl-api")
    with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": owner}) as c:
        made = c.post("/api/v1/keys", json={"role": "org_viewer", "name": "scripted", "api_rate_limit": 5}).json()
    assert made["api_rate_limit"] == 5
    room_in_window(60, room=10)  # the management API counts per minute
    codes = [httpx.get(f"{servers[i % 4].url}/api/v1/gateways", headers={"X-API-Key": made["key"]}).status_code
             for i in range(7)]
    assert codes == [200] * 5 + [429] * 2  # counted across instances
    refused = httpx.get(f"{servers[1].url}/api/v1/gateways", headers={"X-API-Key": made["key"]})
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) > 0
    assert httpx.get(f"{servers[1].url}/api/v1/gateways", headers={"X-API-Key": owner}).status_code == 200


# ---------------------------------------------------------------- Redis failures

def limiter_status(server) -> dict:
    return httpx.get(server.url + "/readyz", timeout=5).json()["checks"]["rate_limits"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_failure_follows_each_deployments_policy_and_recovers(tmp_path, pg_database_factory):
    redis = PrivateRedis()
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=redis.url, NGM_MONITOR="off",
                  NGM_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    servers = start_servers(2, env, tmp_path, "node")
    standin = StandIn("healthy")
    key = make_key(url, "rl-redis")
    try:
        deploy(servers[0], key, standin, "open", global_rate_limit=20, rate_limit_window=60)
        closed_gw = deploy(servers[0], key, standin, "closed", global_rate_limit=1000, rate_limit_window=60)
        with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": key}) as c:
            dep = c.get("/api/v1/deployments", params={"gateway_id": closed_gw["id"]}).json()["items"][0]
            c.put(f"/api/v1/deployments/{dep['id']}", json={"rate_limit_failure_mode": "closed"})
        wait_for(lambda: limiter_status(servers[0])["live_instances"] == 2, 10, "both instances to be seen")
        time.sleep(1.2)
        assert invoke(servers[0], key, "closed").status_code == 200
        assert limiter_status(servers[0])["mode"] == "shared"

        redis.kill()
        started = time.monotonic()
        refused = invoke(servers[0], key, "closed")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "rate_limiter_unavailable"
        assert time.monotonic() - started < 1.0  # no request hangs on a dead Redis
        # and `ratelimits check` says what the router answers (it peeks, but not past a closed deployment)
        check = httpx.post(f"{servers[0].url}/api/v1/ratelimits/check", headers={"X-API-Key": key},
                           json={"agent_id": "closed", "environment": "production"}, timeout=10).json()
        assert (check["admitted"], check["status"]) == (False, 503) and "fails closed" in check["reason"]
        # fail-open: each of the two instances admits its share, 20 / 2 = 10
        room_in_window(60, room=10)
        codes = [invoke(servers[0], key, "open").status_code for _ in range(14)]
        assert codes == [200] * 10 + [429] * 4
        status = limiter_status(servers[0])
        assert status["mode"] == "local" and status["switched_to_local"] >= 1 and status["decided_locally"] >= 14
        assert status["refused_unavailable"] >= 1

        redis.start()
        wait_for(lambda: limiter_status(servers[0])["mode"] == "shared", 10, "the limiter to use Redis again")
        assert limiter_status(servers[0])["recovered"] >= 1
        assert invoke(servers[0], key, "closed").status_code == 200
        log = servers[0].log()
        assert "Redis unreachable" in log and "Redis answers again" in log
    finally:
        for s in servers:
            s.stop()
        standin.stop()
        redis.kill()


def test_bad_rate_limit_input_is_refused_naming_the_field_and_changes_nothing(cluster):
    servers, standin = cluster["servers"], cluster["standin"]
    key = make_key(cluster["url"], "rl-bad")
    gw = deploy(servers[0], key, standin, "bad", global_rate_limit=10)
    with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": key}) as c:
        dep = c.get("/api/v1/deployments", params={"gateway_id": gw["id"]}).json()["items"][0]
        cases = [
            ("PUT", f"/api/v1/gateways/{gw['id']}/rate-limits", {"rate_limit_algorithm": "leaky_bucket"},
             "rate_limit_algorithm"),
            ("PUT", f"/api/v1/gateways/{gw['id']}/rate-limits", {"rate_limit_window": 0}, "rate_limit_window"),
            ("PUT", f"/api/v1/gateways/{gw['id']}/rate-limits", {"global_rate_limit": -1}, "global_rate_limit"),
            ("PUT", f"/api/v1/gateways/{gw['id']}/rate-limits", {"per_user_rate_limit": None}, "per_user_rate_limit"),
            ("PUT", f"/api/v1/deployments/{dep['id']}", {"rate_limit_failure_mode": "maybe"},
             "rate_limit_failure_mode"),
            ("PUT", f"/api/v1/deployments/{dep['id']}", {"rate_limit": -5}, "rate_limit"),
            ("POST", "/api/v1/keys", {"role": "org_member", "api_rate_limit": "many"}, "api_rate_limit"),
        ]
        for method, path, body, field in cases:
            r = c.request(method, path, json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in [d["field"] for d in r.json()["error"]["details"]], r.text
        assert c.get(f"/api/v1/gateways/{gw['id']}").json()["global_rate_limit"] == 10
        after = c.get(f"/api/v1/deployments/{dep['id']}").json()
        assert (after["rate_limit"], after["rate_limit_failure_mode"]) == (None, "open")
        assert c.get("/api/v1/gateways/nope/rate-limits").status_code == 404
