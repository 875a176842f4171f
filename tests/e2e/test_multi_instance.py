"""`ngm serve` processes sharing PostgreSQL and Redis: they split the probing (each gateway once per interval
between them), survivors take over a killed one's share, events cross instances, and least connections weighs
the requests in flight on both."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import make_key
from tests.support.processes import REDIS_URL, ServerProcess, ngm_env
from tests.support.standin import StandIn
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
INTERVAL = 2.5


def monitor_of(server: ServerProcess) -> dict:
    return httpx.get(server.url + "/readyz", timeout=2).json()["checks"]["monitor"]


def probe_times(standins, since: float) -> list[list[float]]:
    return [[r["at"] for r in s.gets(since=since)] for s in standins]


def test_instances_split_the_probing_exactly_and_survivors_take_over_a_killed_ones_share(tmp_path,
                                                                                      pg_database_factory):
    """Two, then three instances sharing PostgreSQL and Redis: each gateway is probed once per interval between
    them (counted at the stand-ins), every instance probing a share; one is killed and the survivors take over
    its share within the lease period, no gateway left unprobed for more than two intervals."""
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR_LEASE_SECONDS="1")
    key = make_key(url, "ha-org")
    servers = [ServerProcess(env, tmp_path / "a.log").wait_ready()]  # creates the key file the others reuse
    servers.append(ServerProcess(env, tmp_path / "b.log").wait_ready())
    standins = [StandIn("healthy") for _ in range(12)]
    try:
        with httpx.Client(base_url=servers[0].url, headers={"X-API-Key": key}) as client:
            for i, s in enumerate(standins):
                assert client.post("/api/v1/gateways", json={
                    "name": f"ha-{i}", "environment": "production", "api_url": s.url,
                    "health_check_interval": INTERVAL, "health_check_timeout": 0.5,
                    "health_grace_period": 0}).status_code == 201

        def split_between(n: int):
            monitors = [monitor_of(s) for s in servers]
            shares = [m["share"] for m in monitors]  # every instance probes some, the shares add up to all
            return shares if all(m["instances"] == n for m in monitors) and sum(shares) == 12 and min(shares) else None

        for n in (2, 3):
            if n == 3:
                servers.append(ServerProcess(env, tmp_path / "c.log").wait_ready())
            wait_for(lambda n=n: split_between(n), 10, f"{n} instances to split the gateways")
            time.sleep(INTERVAL * 1.2)  # a gateway that moved is probed on its old schedule: let one pass
            start = time.monotonic()
            time.sleep(INTERVAL * 4)
            counts = [len(t) for t in probe_times(standins, start)]
            assert all(3 <= c <= 5 for c in counts), (n, counts)  # 4 intervals ± 10% jitter: once each, not twice

        victim = servers.pop(1)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.monotonic()
        wait_for(lambda: split_between(2), 1 + 2, "the survivors to take over within the lease period")
        time.sleep(INTERVAL * 3)
        for times in probe_times(standins, killed_at - INTERVAL * 2):
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert times and times[-1] > time.monotonic() - INTERVAL * 2 and max(gaps) <= 2 * INTERVAL, gaps
    finally:
        for s in servers:
            s.stop()
        for s in standins:
            s.stop()


def test_events_reach_subscribers_on_the_instance_that_does_not_probe(tmp_path, pg_database_factory):
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR_LEASE_SECONDS="2")
    key = make_key(url, "bus-org")
    first = ServerProcess(env, tmp_path / "a.log").wait_ready()
    second = ServerProcess({**env, "NGM_MONITOR": "off"}, tmp_path / "b.log").wait_ready()  # never probes
    server = StandIn("healthy")
    try:
        with httpx.Client(base_url=second.url, headers={"X-API-Key": key}, timeout=10) as client:
            gateway = client.post("/api/v1/gateways", json={
                "name": "bus", "environment": "staging", "api_url": server.url, "health_check_interval": 0.5,
                "health_check_timeout": 0.4, "healthy_threshold": 1, "health_grace_period": 0}).json()
            with client.stream("GET", "/api/v1/events", params={"types": "health.probe"}) as resp:
                # the stream never ends by itself: the first event ends the loop (the client's timeout, or the
                # test's, when none comes)
                event = next(line for line in resp.iter_lines() if line.startswith("data: "))
            assert '"outcome":"ok"' in event.replace(" ", "") and gateway["id"] in event, event
    finally:
        for s in (first, second):
            s.stop()
        server.stop()


def test_least_connections_counts_requests_in_flight_on_every_instance(tmp_path, pg_database_factory):
    """Three slow requests through the first instance keep one deployment busy; the second instance, which
    has nothing in flight itself, must still send its requests to the other deployment."""
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR="off")
    key = make_key(url, "lc-org")
    first = ServerProcess(env, tmp_path / "a.log").wait_ready()
    second = ServerProcess(env, tmp_path / "b.log").wait_ready()
    busy, idle = StandIn("slow", delay=4.0), StandIn("healthy")
    headers = {"X-API-Key": key}
    invoke = "/api/v1/agents/lc-bot/invoke/work"

    def deploy(client, name, standin) -> str:
        gw = client.post("/api/v1/gateways", json={"name": name, "environment": "production", "api_url": standin.url})
        assert gw.status_code == 201, gw.text
        dep = client.post("/api/v1/deployments", json={"gateway_id": gw.json()["id"], "agent_id": "lc-bot",
                                                       "agent_version": "v1"})
        assert dep.status_code == 201, dep.text
        return dep.json()["id"]

    try:
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as client:
            busy_id = deploy(client, "busy", busy)
            policy = client.put("/api/v1/routing/policies", json={"agent_id": "lc-bot", "environment": "production",
                                                                   "strategy": "least_connections"})
            assert policy.status_code == 200, policy.text
            with ThreadPoolExecutor(3) as pool:
                slow = [pool.submit(httpx.get, first.url + invoke, headers=headers, timeout=20) for _ in range(3)]
                wait_for(lambda: len(busy.gets()) == 3, 5, "three requests in flight on the busy gateway")
                busy.mode = "healthy"  # from now on it would answer at once: only its load speaks against it
                idle_id = deploy(client, "idle", idle)
                time.sleep(1.5)  # the second instance routes over both; the first has published its counts
                picks = [httpx.get(second.url + invoke, headers=headers, timeout=10).headers["x-ngm-deployment"]
                         for _ in range(4)]
                assert picks == [idle_id] * 4, (picks, busy_id)
                assert [f.result().status_code for f in slow] == [200, 200, 200]
    finally:
        for s in (first, second):
            s.stop()
        busy.stop()
        idle.stop()


def add_installation(database_url: str, n: int) -> None:
    """n gateways and n deployments in n/40 other organizations, written straight into the database."""
    import asyncio

    from ngm.models.database import open_database
    from ngm.models.query import insert_many
    from ngm.models.rows import new_id, utcnow

    async def go():
        db = await open_database(database_url)
        try:
            for start in range(0, n, 2000):
                gateways = [{"id": new_id(), "organization_id": f"big-{i // 40:05d}", "name": f"gw-{i:06d}",
                             "environment": "production", "api_url": f"http://127.0.0.1:9/{i}"}
                            for i in range(start, min(n, start + 2000))]
                await insert_many(db, "Gateway", gateways)
                await insert_many(db, "GatewayDeployment", [
                    {"id": new_id(), "organization_id": g["organization_id"], "gateway_id": g["id"], "agent_id": "a",
                     "agent_version": "v1", "deployed_at": utcnow(), "deployed_by": "tests"} for g in gateways])
        finally:
            await db.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def test_a_change_reaches_another_instances_router_within_a_second_and_a_lost_one_comes_with_the_resync(
        tmp_path, pg_database_factory):
    """10,000 gateways and deployments besides. An operator's change on one instance is routed by the other
    within a second (the feed, woken by the bus); a change nobody announced and whose feed rows are gone (a lost
    notification) is routed after the periodic full re-read."""
    import psycopg2

    url = pg_database_factory()
    add_installation(url, 10_000)
    resync = 3.0
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR="off",
                  NGM_ROUTING_RESYNC_SECONDS=str(resync))
    key = make_key(url, "mover-org")
    first = ServerProcess(env, tmp_path / "a.log").wait_ready()
    second = ServerProcess(env, tmp_path / "b.log").wait_ready()
    upstream = StandIn("healthy")
    headers = {"X-API-Key": key}
    invoke = second.url + "/api/v1/agents/mover/invoke/workflows/w/execute"
    try:
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as client:
            gw = client.post("/api/v1/gateways", json={"name": "one", "environment": "production",
                                                       "api_url": upstream.url}).json()
            assert client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "mover",
                                                            "agent_version": "v1"}).status_code == 201
            wait_for(lambda: httpx.post(invoke, headers=headers, json={}).status_code == 200, 5,
                     "the other instance to route to the new deployment")

            changed = time.monotonic()
            assert client.put(f"/api/v1/gateways/{gw['id']}", json={"status": "inactive"}).status_code == 200
            wait_for(lambda: httpx.post(invoke, headers=headers, json={}).status_code == 503, 2,
                     "the other instance to stop routing to the inactive gateway")
            assert time.monotonic() - changed < 1.0

        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:  # a change nobody announced, without its feed row (triggers off, as a restore)
            cur.execute("SET session_replication_role = replica")
            cur.execute("UPDATE gateways SET status = 'active' WHERE id = %s", (gw["id"],))
        conn.close()
        lost = time.monotonic()
        wait_for(lambda: httpx.post(invoke, headers=headers, json={}).status_code == 200, resync + 2,
                 "the resync to bring the lost change")
        assert time.monotonic() - lost < resync + 2
    finally:
        for s in (first, second):
            s.stop()
        upstream.stop()
