"""Live health on a running `ngm serve`: the monitor, the SSE stream, `ngm events tail` and webhooks."""

import json
import time

import anyio
import httpx
import pytest

from ngm.nodes.events.signing import verify
from tests.support.standin import StandIn

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]
LIVE = {"health_check_interval": 0.5, "health_check_timeout": 0.4, "healthy_threshold": 1,
        "unhealthy_threshold": 1, "health_grace_period": 0}


async def sse_events(url: str, key: str, stop_after: int, timeout: float, **params) -> list[dict]:
    """Events received (each with "_received_at", monotonic) until stop_after or timeout."""
    events = []
    async with httpx.AsyncClient(timeout=None) as client:
        with anyio.move_on_after(timeout):
            async with client.stream("GET", url + "/api/v1/events", params=params,
                                     headers={"X-API-Key": key}) as resp:
                assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]) | {"_received_at": time.monotonic()})
                        if len(events) >= stop_after:
                            break
    return events


async def healthy_gateway(deployment, key: str, name: str, server: StandIn) -> dict:
    """A gateway on the stand-in, once the running monitor has found it healthy."""
    with deployment.client(key) as client:
        gw = client.post("/api/v1/gateways", json={"name": name, "environment": "production",
                                                   "api_url": server.url, **LIVE}).json()
        deadline = time.monotonic() + 10
        while client.get(f"/api/v1/gateways/{gw['id']}").json()["health_status"] != "healthy":
            assert time.monotonic() < deadline, "the monitor never probed the gateway"
            await anyio.sleep(0.1)
    return gw


async def test_the_stream_delivers_a_transition_within_one_interval(deployment):
    org, key = deployment.new_org()
    _, other_key = deployment.new_org()
    server = StandIn("healthy")
    try:
        gw = await healthy_gateway(deployment, key, "live", server)
        async with anyio.create_task_group() as tg:
            results = {}

            async def listen(name, k):
                results[name] = await sse_events(deployment.url, k, 1, timeout=6, types="health.transition")

            tg.start_soon(listen, "mine", key)
            tg.start_soon(listen, "theirs", other_key)
            await anyio.sleep(0.5)  # both subscribed
            server.mode = "error"
            failed_at = time.monotonic()
        [event] = results["mine"]
        assert event["type"] == "health.transition" and event["organization_id"] == org
        data = event["data"]
        assert (data["gateway_id"], data["from_health"], data["to_health"]) == (gw["id"], "healthy", "unhealthy")
        assert (data["from_status"], data["to_status"]) == ("active", "error")
        assert results["theirs"] == []  # another organization's stream stays silent
        # the next probe is due within one interval (+10% jitter); then its timeout and the recorder's flush
        bound = LIVE["health_check_interval"] * 1.1 + LIVE["health_check_timeout"] + 0.25
        assert event["_received_at"] - failed_at < bound + 0.5, event["_received_at"] - failed_at
    finally:
        server.stop()


async def test_probe_results_stream_and_filters(deployment):
    org, key = deployment.new_org()
    server = StandIn("healthy")
    try:
        with deployment.client(key) as client:
            gw = client.post("/api/v1/gateways", json={"name": "probed", "environment": "staging",
                                                       "api_url": server.url, **LIVE}).json()
            bad = client.get("/api/v1/events", params={"types": "nope"})
            assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "types"
        events = await sse_events(deployment.url, key, 2, timeout=5, types="health.probe", gateway_id=gw["id"])
        assert [e["type"] for e in events] == ["health.probe", "health.probe"]
        assert all(e["data"]["gateway_id"] == gw["id"] and e["data"]["outcome"] == "ok" for e in events)
    finally:
        server.stop()


async def test_events_tail_prints_transitions(deployment):
    org, key = deployment.new_org()
    server = StandIn("healthy")
    try:
        gw = await healthy_gateway(deployment, key, "tailed", server)

        def tail():
            return deployment.cli(["events", "tail", "--types", "health.transition", "--count", "2", "--json"], key)

        async with anyio.create_task_group() as tg:
            out = {}

            async def run():
                out["result"] = await anyio.to_thread.run_sync(tail)

            tg.start_soon(run)
            # Flap until the CLI has printed two transitions: however long it takes to start and
            # subscribe, the transitions after that reach it (no fixed sleep to race).
            while "result" not in out:
                server.mode = "error" if server.mode == "healthy" else "healthy"
                await anyio.sleep(1.5)
        result = out["result"]
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(events) == 2 and all(e["type"] == "health.transition" for e in events)
        assert all(e["data"]["gateway_id"] == gw["id"] and e["organization_id"] == org for e in events)
        first, second = (e["data"] for e in events)
        assert first["to_health"] == second["from_health"] and first["to_health"] != second["to_health"]
    finally:
        server.stop()


async def test_webhooks_receive_signed_transitions_from_the_server(deployment):
    org, key = deployment.new_org()
    receiver, server = StandIn(), StandIn("healthy")
    try:
        with deployment.client(key) as client:
            hook = client.post("/api/v1/webhooks", json={"url": receiver.url + "/ngm"}).json()
            assert "secret" in hook and client.get(f"/api/v1/webhooks/{hook['id']}").json().get("secret") is None
            client.post("/api/v1/gateways", json={"name": "hooked", "environment": "production",
                                                  "api_url": server.url, **LIVE})
            deadline = time.monotonic() + 10
            while len(receiver.posts()) < 1:
                assert time.monotonic() < deadline
                await anyio.sleep(0.1)
            server.mode = "error"
            while len(receiver.posts()) < 2:
                assert time.monotonic() < deadline
                await anyio.sleep(0.1)
            await anyio.sleep(1.5)  # nothing more arrives: each transition once
            deliveries = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
            transitions = client.get("/api/v1/events/transitions").json()["items"]
        posts = receiver.posts()
        assert len(posts) == 2
        bodies = [json.loads(p["body"]) for p in posts]
        assert [b["data"]["to_health"] for b in bodies] == ["healthy", "unhealthy"]
        assert all(verify(hook["secret"], p["headers"]["X-NGM-Signature"], p["body"], time.time()) for p in posts)
        assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
        # each transition names the alerts it sent (the dashboard's health view shows them)
        assert [t["to_health"] for t in transitions] == ["unhealthy", "healthy"]
        assert [[(d["webhook_id"], d["status"]) for d in t["deliveries"]] for t in transitions] == \
            [[(hook["id"], "delivered")]] * 2
    finally:
        receiver.stop()
        server.stop()


async def test_readiness_reports_the_monitor(deployment):
    async with httpx.AsyncClient() as client:
        ready = (await client.get(deployment.url + "/readyz")).json()
    assert ready["checks"]["monitor"]["leader"] is True  # the only instance holds the lease (or needs none)
    shared = "NGM_REDIS_URL" in deployment.env
    assert ready["checks"]["monitor"]["mode"] == ("redis lease" if shared else "single instance")
