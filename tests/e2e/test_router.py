"""The forwarding router over real HTTP: `ngm serve` as a process, stand-in gateways on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.standin import StandIn
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
INVOKE = "/api/v1/agents/{agent}/invoke/workflows/chat/execute"


class Fleet:
    """An organization with stand-in gateways and one agent deployed on them."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.org, self.key = deployment.new_org()
        self.client = deployment.client(self.key)
        self.agent = f"bot-{uuid.uuid4().hex[:6]}"
        self.standins: list[StandIn] = []

    def gateway(self, standin=None, **extra) -> tuple[dict, StandIn]:
        standin = standin or StandIn()
        self.standins.append(standin)
        gw = self.client.post("/api/v1/gateways", json={"name": f"gw-{uuid.uuid4().hex[:6]}",
                                                        "environment": "production", "api_url": standin.url,
                                                        "api_key": f"gw-key-{standin.port}", **extra})
        assert gw.status_code == 201, gw.text
        return gw.json(), standin

    def deploy(self, gateway: dict, weight: int = 100, version: str = "v1") -> dict:
        r = self.client.post("/api/v1/deployments", json={"gateway_id": gateway["id"], "agent_id": self.agent,
                                                          "agent_version": version, "weight": weight})
        assert r.status_code == 201, r.text
        return r.json()

    def policy(self, **fields):
        r = self.client.put("/api/v1/routing/policies", json={"agent_id": self.agent, "environment": "production",
                                                              **fields})
        assert r.status_code == 200, r.text

    def invoke(self, client=None, method="GET", **kw) -> httpx.Response:
        return (client or self.client).request(method, INVOKE.format(agent=self.agent), **kw)

    def close(self):
        self.client.close()
        for s in self.standins:
            s.stop()


@pytest.fixture
def fleet(deployment):
    f = Fleet(deployment)
    yield f
    f.close()


def invoke_paths(standin) -> list[dict]:
    return [r for r in standin.gets() if not r["path"].startswith("/health")]


def test_90_10_over_10000_requests_and_every_window_of_10(fleet):
    a, _ = fleet.gateway()
    b, _ = fleet.gateway()
    da, db = fleet.deploy(a, 90), fleet.deploy(b, 10)
    sequence = [fleet.invoke().headers["x-ngm-deployment"] for _ in range(100)]
    for start in range(0, 91):
        assert sequence[start:start + 10].count(db["id"]) == 1, sequence

    def batch(n):
        with fleet.deployment.client(fleet.key) as client:
            return [fleet.invoke(client).headers["x-ngm-deployment"] for _ in range(n)]

    with ThreadPoolExecutor(8) as pool:
        counts = Counter(x for chunk in pool.map(batch, [1238] * 8) for x in chunk)
    counts.update(sequence)
    assert sum(counts.values()) == 10_004
    assert abs(counts[da["id"]] - 9004) <= 90 and abs(counts[db["id"]] - 1000) <= 10  # within 1%
    traffic = fleet.client.get(f"/api/v1/agents/{fleet.agent}/traffic", params={"window": "5m"}).json()
    shares = {d["deployment_id"]: (d["configured_share_percent"], d["observed_share_percent"], d["requests"])
              for d in traffic["deployments"]}
    assert shares[da["id"]][0] == 90.0 and abs(shares[da["id"]][1] - 90.0) <= 1.0
    assert shares[db["id"]][2] == counts[db["id"]] and traffic["requests"] == 10_004


def test_forwarding_headers_body_and_credentials(fleet):
    gw, standin = fleet.gateway()
    dep = fleet.deploy(gw)
    with fleet.deployment.client(None) as bearer:  # the key as a Bearer token this time (one credential only)
        r = fleet.invoke(bearer, method="POST", content=b'{"message": "hi \xc3\xbc"}', params={"q": "1 2"},
                         headers={"X-Request-ID": "trace-1", "Content-Type": "application/json", "X-Custom": "kept",
                                  "Authorization": f"Bearer {fleet.key}"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-1"
    assert r.headers["x-ngm-deployment"] == dep["id"] and r.json()["received"] == len('{"message": "hi ü"}'.encode())
    [seen] = standin.posts()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/workflows/chat/execute?q=1+2" and seen["body"] == b'{"message": "hi \xc3\xbc"}'
    assert headers["x-api-key"] == f"gw-key-{standin.port}" and "authorization" not in headers
    assert fleet.key not in str(seen["headers"])
    assert headers["x-request-id"] == "trace-1" and headers["x-custom"] == "kept"
    assert headers["x-ngm-agent"] == fleet.agent and headers["x-ngm-deployment"] == dep["id"]
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    assert headers["content-length"] == str(len(seen["body"]))


def test_refusals(fleet, deployment):
    r = fleet.invoke()
    assert r.status_code == 404 and r.json()["error"]["code"] == "agent_not_deployed"
    gw, _ = fleet.gateway()
    dep = fleet.deploy(gw)
    assert fleet.invoke(headers={"X-NGM-Environment": "moon"}).status_code == 422
    with deployment.client(None) as anon:
        assert fleet.invoke(anon).status_code == 401
    fleet.client.post(f"/api/v1/deployments/{dep['id']}/deactivate")  # live at once on the instance that made it
    r = fleet.invoke()
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_deployment"
    assert r.json()["error"]["details"] == [{"deployment_id": dep["id"], "reason": "deployment inactive"}]
    assert r.headers["retry-after"] == "5"


def test_an_unreachable_gateway_with_nowhere_to_retry_answers_502(fleet):
    gw, standin = fleet.gateway()
    fleet.deploy(gw)
    standin.stop()  # its port closed: connections are refused
    for method in ("GET", "POST"):  # the GET is retried, on nothing: the caller hears why, not "no healthy deployment"
        r = fleet.invoke(method=method)
        assert r.status_code == 502 and r.json()["error"]["code"] == "gateway_unreachable", r.text
        assert r.json()["error"]["message"].startswith("the gateway could not be reached")
        assert "127.0.0.1" not in r.text and str(standin.port) not in r.text  # where it is stays in the log


def test_sticky_users_stay_on_one_variant(fleet):
    a, _ = fleet.gateway()
    b, _ = fleet.gateway()
    fleet.deploy(a, 90)
    db = fleet.deploy(b, 10)
    fleet.policy(sticky=True)
    homes = {}
    for user in range(300):
        seen = {fleet.invoke(headers={"X-Routing-Key": f"user-{user}"}).headers["x-ngm-deployment"] for _ in range(3)}
        assert len(seen) == 1
        homes[user] = seen.pop()
    assert 0.04 <= sum(1 for d in homes.values() if d == db["id"]) / 300 <= 0.17
    # without the header, the caller's API key is the sticky key: one home for this caller
    assert len({fleet.invoke().headers["x-ngm-deployment"] for _ in range(10)}) == 1


def test_draining_takes_no_new_requests_and_ends_after_the_ones_in_flight(fleet):
    slow_gw, slow = fleet.gateway(StandIn("slow", delay=2.0), request_timeout=10)
    fast_gw, fast = fleet.gateway()
    slow_dep, fast_dep = fleet.deploy(slow_gw), fleet.deploy(fast_gw)
    answers = []

    def call():
        with fleet.deployment.client(fleet.key) as client:
            answers.append(fleet.invoke(client))

    threads = [threading.Thread(target=call) for _ in range(6)]  # 50/50: three of them to the slow gateway
    for t in threads:
        t.start()
    wait_for(lambda: len(invoke_paths(slow)) == 3, 10, "three requests at the slow gateway")
    r = fleet.client.post(f"/api/v1/deployments/{slow_dep['id']}/drain", json={"timeout_seconds": 30})
    assert r.status_code == 202 and r.json()["status"] == "draining" and r.json()["in_flight"] == 3
    drain_started = time.monotonic()
    before = len(invoke_paths(slow))
    new = [fleet.invoke().headers["x-ngm-deployment"] for _ in range(20)]
    assert set(new) == {fast_dep["id"]} and len(invoke_paths(slow)) == before
    assert fleet.client.get(f"/api/v1/deployments/{slow_dep['id']}").json()["status"] == "draining"
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 6  # the ones in flight finished
    deadline = time.monotonic() + 10
    while fleet.client.get(f"/api/v1/deployments/{slow_dep['id']}").json()["status"] != "inactive":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert time.monotonic() - drain_started >= 1.5  # not before the slow requests were done


def test_an_unhealthy_gateway_receives_nothing(fleet):
    sick_gw, sick = fleet.gateway(health_check_interval=0.5, health_check_timeout=0.4, unhealthy_threshold=1,
                                  health_grace_period=0)
    well_gw, _ = fleet.gateway()
    fleet.deploy(sick_gw)
    well = fleet.deploy(well_gw)
    sick.mode = "error"
    deadline = time.monotonic() + 10
    while fleet.client.get(f"/api/v1/gateways/{sick_gw['id']}").json()["health_status"] != "unhealthy":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)
    before = len(invoke_paths(sick))
    assert {fleet.invoke().headers["x-ngm-deployment"] for _ in range(40)} == {well["id"]}
    assert len(invoke_paths(sick)) == before
    skipped = fleet.client.post("/api/v1/route", json={"agent_id": fleet.agent, "environment": "production"}).json()
    assert skipped["skipped"][0]["reason"] in ("gateway unhealthy", "gateway in error")


def test_least_connections_sends_work_to_the_least_loaded(fleet):
    slow_gw, slow = fleet.gateway(StandIn("slow", delay=1.0))
    fast_gw, fast = fleet.gateway(StandIn("slow", delay=0.05))
    fleet.deploy(slow_gw)
    fleet.deploy(fast_gw)
    fleet.policy(strategy="least_connections")

    def call(_):
        with fleet.deployment.client(fleet.key) as client:
            return fleet.invoke(client).headers["x-ngm-gateway"]

    with ThreadPoolExecutor(6) as pool:
        landed = Counter(pool.map(call, range(60)))
    assert landed[fast_gw["id"]] >= 4 * landed[slow_gw["id"]], landed


def test_geographic_prefers_the_region_and_falls_back(fleet):
    eu_gw, _ = fleet.gateway(region="eu-west-1")
    us_gw, _ = fleet.gateway(region="us-east-1")
    fleet.deploy(eu_gw)
    us = fleet.deploy(us_gw)
    fleet.policy(strategy="geographic")
    assert {fleet.invoke(headers={"X-NGM-Region": "us-east-1"}).headers["x-ngm-gateway"] for _ in range(10)} == {
        us_gw["id"]}
    fleet.client.post(f"/api/v1/deployments/{us['id']}/deactivate")  # live at once on this instance
    assert {fleet.invoke(headers={"X-NGM-Region": "us-east-1"}).headers["x-ngm-gateway"] for _ in range(5)} == {
        eu_gw["id"]}
    fleet.policy(strategy="geographic", fallback="none")
    assert fleet.invoke(headers={"X-NGM-Region": "us-east-1"}).status_code == 503


def test_consecutive_failures_open_the_circuit(fleet):
    broken_gw, broken = fleet.gateway(StandIn("broken_api"))
    good_gw, _ = fleet.gateway()
    fleet.deploy(broken_gw)
    fleet.deploy(good_gw)
    statuses = [fleet.invoke().status_code for _ in range(40)]
    assert statuses.count(500) <= 8 and statuses.count(200) >= 32  # five failures open it; trials after that
    route = fleet.client.post("/api/v1/route", json={"agent_id": fleet.agent, "environment": "production"}).json()
    circuits = {c["gateway_id"]: c["circuit"] for c in route["candidates"] + route["skipped"]}
    assert circuits[broken_gw["id"]] in ("open", "half_open") and circuits[good_gw["id"]] == "closed"


def start_standin_process() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.standin_process"], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}"


def test_killing_a_gateway_mid_run_fails_no_idempotent_request(fleet):
    processes = [start_standin_process() for _ in range(3)]
    try:
        gateways = []
        for _, url in processes:
            r = fleet.client.post("/api/v1/gateways", json={"name": f"k-{uuid.uuid4().hex[:6]}",
                                                            "environment": "production", "api_url": url})
            gateways.append(r.json())
            fleet.deploy(r.json())
        stop, results, threads = threading.Event(), [], 4

        def load():
            with fleet.deployment.client(fleet.key) as client:
                while not stop.is_set():
                    try:
                        results.append(fleet.invoke(client).status_code)
                    except httpx.HTTPError:
                        results.append("transport error")

        workers = [threading.Thread(target=load) for _ in range(threads)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        processes[0][0].send_signal(signal.SIGKILL)
        killed_at = len(results)
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join()
        failures = [r for r in results if r != 200]
        assert len(results) - killed_at > 100  # traffic went on after the kill
        assert failures == [], Counter(failures)  # the requests in flight at that moment were retried elsewhere
    finally:
        for proc, _ in processes:
            proc.kill()
