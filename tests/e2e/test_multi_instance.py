"""Two `ngm serve` processes sharing PostgreSQL and Redis: each gateway is probed once per interval
between them, the survivor takes over when the prober is killed, events cross instances, and least
connections weighs the requests in flight on both."""

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
INTERVAL = 1.0


def leader_of(servers) -> list[ServerProcess]:
    leaders = []
    for s in servers:
        try:
            if httpx.get(s.url + "/readyz", timeout=2).json()["checks"]["monitor"]["leader"]:
                leaders.append(s)
        except httpx.HTTPError:
            pass
    return leaders


def probes_per_gateway(standins, seconds: float) -> list[int]:
    start = time.monotonic()
    time.sleep(seconds)
    return [len(s.gets(since=start)) for s in standins]


def test_two_instances_probe_once_per_interval_and_fail_over(tmp_path, pg_database_factory):
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR_LEASE_SECONDS="2")
    key = make_key(url, "ha-org")
    first = ServerProcess(env, tmp_path / "a.log").wait_ready()  # creates the key file the second one reuses
    second = ServerProcess(env, tmp_path / "b.log").wait_ready()
    standins = [StandIn("healthy") for _ in range(3)]
    try:
        with httpx.Client(base_url=first.url, headers={"X-API-Key": key}) as client:
            for i, s in enumerate(standins):
                client.post("/api/v1/gateways", json={
                    "name": f"ha-{i}", "environment": "production", "api_url": s.url,
                    "health_check_interval": INTERVAL, "health_check_timeout": 0.5, "health_grace_period": 0})
        servers = [first, second]
        [leader] = wait_for(lambda: leader_of(servers) if len(leader_of(servers)) == 1 else None, 10, "one leader")
        wait_for(lambda: all(s.gets() for s in standins), 10, "first probes")
        counts = probes_per_gateway(standins, 6.0)
        assert all(5 <= c <= 7 for c in counts), counts  # once per interval between them, not twice

        survivor = second if leader is first else first
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        killed_at = time.monotonic()
        wait_for(lambda: leader_of([survivor]), 10, "the survivor to take the lease")
        assert time.monotonic() - killed_at < 2 * 2 + 2  # within a couple of lease periods
        wait_for(lambda: all(s.gets(since=killed_at) for s in standins), 10, "probes after the takeover")
        counts = probes_per_gateway(standins, 5.0)
        assert all(4 <= c <= 6 for c in counts), counts
    finally:
        for s in (first, second):
            s.stop()
        for s in standins:
            s.stop()


def test_events_reach_subscribers_on_the_instance_that_does_not_probe(tmp_path, pg_database_factory):
    url = pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR_LEASE_SECONDS="2")
    key = make_key(url, "bus-org")
    first = ServerProcess(env, tmp_path / "a.log").wait_ready()
    second = ServerProcess(env, tmp_path / "b.log").wait_ready()
    server = StandIn("healthy")
    try:
        [leader] = wait_for(lambda: leader_of([first, second]) if len(leader_of([first, second])) == 1 else None,
                            10, "one leader")
        follower = second if leader is first else first
        with httpx.Client(base_url=follower.url, headers={"X-API-Key": key}, timeout=10) as client:
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
