"""The health monitor against stand-in gateways that are healthy, slow, failing, dropping, flapping or
stopped: hysteresis, status changes, history and events, on SQLite and PostgreSQL."""

import anyio
import pytest

from ngm.models.query import select
from ngm.nodes.auth.keys import Principal
from ngm.nodes.health.monitor import HealthMonitor
from ngm.workflows.executor import Executor

pytestmark = pytest.mark.anyio
FAST = {"health_grace_period": 0, "health_check_interval": 0.5, "health_check_timeout": 0.5}


@pytest.fixture
def setup(monitor_ctx, org, standin):
    ctx = monitor_ctx
    executor = Executor(ctx)
    owner = Principal(org, "org_owner", "k", "tester")
    monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, ctx.probes)

    async def gateway(server, **extra):
        return await executor.run("gateways_create", owner, {
            "name": f"gw-{server.port}", "environment": "production", "api_url": server.url, **FAST, **extra})

    async def state(gw):
        got = await executor.run("gateways_get", owner, None, gw["id"])
        return got["health_status"], got["status"]

    async def sweeps(gw, n):
        out = []
        for _ in range(n):
            await monitor.sweep()
            out.append(await state(gw))
        return out

    return ctx, executor, owner, monitor, gateway, sweeps, standin


async def transitions(ctx, gw):
    rows = await select(ctx.database, "HealthEvent", {"gateway_id": gw["id"]}, order=["occurred_at", "id"])
    return [(r["from_health"], r["to_health"], r["from_status"], r["to_status"]) for r in rows]


async def test_unhealthy_after_the_configured_failures_and_back_after_the_successes(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    server = standin("healthy")
    gw = await gateway(server, unhealthy_threshold=3, healthy_threshold=2)
    assert await sweeps(gw, 2) == [("unknown", "active"), ("healthy", "active")]
    server.mode = "error"
    assert await sweeps(gw, 3) == [("healthy", "active"), ("healthy", "active"), ("unhealthy", "error")]
    server.mode = "healthy"
    assert await sweeps(gw, 2) == [("unhealthy", "error"), ("healthy", "active")]
    assert await transitions(ctx, gw) == [("unknown", "healthy", "active", "active"),
                                          ("healthy", "unhealthy", "active", "error"),
                                          ("unhealthy", "healthy", "error", "active")]


async def test_slow_gateways_become_degraded(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("slow", delay=0.15), degraded_latency_ms=50)
    assert await sweeps(gw, 2) == [("unknown", "active"), ("degraded", "active")]


async def test_unhealthy_workflows_degrade_and_are_shown(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin(body={"status": "healthy", "workflows": {"chat": "healthy", "rag": "unhealthy"}}))
    assert (await sweeps(gw, 2))[-1] == ("degraded", "active")
    assert (await executor.run("gateways_get", owner, None, gw["id"]))["unhealthy_workflows"] == ["rag"]


@pytest.mark.parametrize("mode", ["drop", "stopped"])
async def test_dead_gateways_become_unhealthy(setup, mode):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    server = standin("healthy" if mode == "stopped" else mode)
    gw = await gateway(server, unhealthy_threshold=2)
    if mode == "stopped":
        server.stop()
    assert await sweeps(gw, 2) == [("unknown", "active"), ("unhealthy", "error")]
    got = await executor.run("gateways_get", owner, None, gw["id"])
    assert got["last_health_status"] == ("connection_refused" if mode == "stopped" else "error")


async def test_flapping_does_not_flip_the_status(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    server = standin("healthy")
    gw = await gateway(server, unhealthy_threshold=2, healthy_threshold=2)
    await sweeps(gw, 2)
    seen = []
    for i in range(8):
        server.mode = "error" if i % 2 == 0 else "healthy"
        seen += await sweeps(gw, 1)
    assert set(seen) == {("healthy", "active")}
    assert await transitions(ctx, gw) == [("unknown", "healthy", "active", "active")]


async def test_inactive_gateways_are_never_probed_or_flipped(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    server = standin("error")
    gw = await gateway(server, status="inactive", unhealthy_threshold=1)
    assert await sweeps(gw, 3) == [("unknown", "inactive")] * 3
    assert server.requests == []


async def test_provisioning_gateways_are_probed_but_keep_their_status(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("error"), status="provisioning", unhealthy_threshold=1)
    assert await sweeps(gw, 1) == [("unhealthy", "provisioning")]


async def test_grace_period_after_creation(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("error"), unhealthy_threshold=1, health_grace_period=600)
    assert await sweeps(gw, 3) == [("unknown", "active")] * 3


async def test_an_operator_setting_inactive_is_never_overwritten(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("error"), unhealthy_threshold=1)
    await monitor.refresh()  # the monitor believes it is active ...
    await executor.run("gateways_update", owner, {"status": "inactive"}, gw["id"])  # ... the operator disagrees
    row = monitor.gateways[gw["id"]]
    result = await monitor.probe_gateway(row)
    [summary] = await ctx.recorder.record([(row, result)])
    assert (await executor.run("gateways_get", owner, None, gw["id"]))["status"] == "inactive"
    assert summary["gateway_status"] == "inactive"
    assert summary["transition"]["to_status"] == "inactive"  # the event tells what really happened


async def test_manual_checks_follow_the_same_hysteresis(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("error"), unhealthy_threshold=2)
    first = await executor.run("gateways_check", owner, None, gw["id"])
    second = await executor.run("gateways_check", owner, None, gw["id"])
    assert (first["status"], second["status"]) == ("unknown", "unhealthy")
    assert second["gateway_status"] == "error" and second["transition"]["to_health"] == "unhealthy"
    assert first["transition"] is None and first["outcome"] == "http_503"


async def test_history_with_uptime_and_percentiles(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    server = standin("healthy")
    gw = await gateway(server)
    await sweeps(gw, 3)
    server.mode = "error"
    await sweeps(gw, 1)
    history = await executor.run("gateways_history", owner, {"window": "1h", "limit": 10}, gw["id"])
    assert history["probes"] == 4 and history["successes"] == 3 and history["uptime_percent"] == 75.0
    assert [i["outcome"] for i in history["items"]] == ["http_error", "ok", "ok", "ok"]
    latency = history["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert history["items"][0]["http_status"] == 503 and history["items"][0]["source"] == "monitor"
    assert (await executor.run("gateways_history", owner, {"window": "1h", "limit": 2}, gw["id"]))["items"][1][
        "outcome"] == "ok"


async def test_history_pruning(setup):
    from datetime import timedelta

    from ngm.models.rows import utcnow

    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    gw = await gateway(standin("healthy"))
    await sweeps(gw, 2)
    assert await ctx.health_store.prune(utcnow() - timedelta(hours=1)) == 0
    assert await ctx.health_store.prune(utcnow() + timedelta(seconds=1)) >= 2
    assert (await executor.run("gateways_history", owner, {"window": "1h"}, gw["id"]))["probes"] == 0


async def test_the_loop_probes_once_per_interval_and_a_slow_gateway_delays_no_one(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    fast, slow = standin("healthy"), standin("slow", delay=2.0)
    await gateway(fast, health_check_interval=0.5)
    await gateway(slow, health_check_interval=0.5, health_check_timeout=0.5)

    async def loop():
        while True:
            await anyio.sleep(min(0.5, await monitor.step()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await anyio.sleep(0.6)  # the first probes are spread over the first interval
        start = len(fast.gets())
        await anyio.sleep(3.0)
        tg.cancel_scope.cancel()
    probes = len(fast.gets()) - start
    assert 5 <= probes <= 7, probes  # 3 s at 0.5 s ± 10% jitter, never held up by the slow one
    await monitor.stop()


async def test_a_new_interval_or_url_takes_effect_at_once_not_at_the_old_due_time(setup):
    ctx, executor, owner, monitor, gateway, sweeps, standin = setup
    monitor.refresh_every = 0.2
    first, second = standin("healthy"), standin("healthy")
    gw = await gateway(first, health_check_interval=3600)

    async def loop():
        while True:
            await anyio.sleep(min(0.1, await monitor.step()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        with anyio.fail_after(8):  # the first probe comes within the cold start's spread (5 s at most)
            while not first.gets():
                await anyio.sleep(0.05)
        await executor.run("gateways_update", owner, {"health_check_url": second.url + "/health"}, gw["id"])
        with anyio.fail_after(3):  # not in an hour: at once, at the new URL
            while not second.gets():
                await anyio.sleep(0.05)
        await executor.run("gateways_update", owner, {"health_check_interval": 0.5}, gw["id"])
        await anyio.sleep(2.5)
        tg.cancel_scope.cancel()
    assert len(second.gets()) >= 3, len(second.gets())  # every half second now
    await monitor.stop()
