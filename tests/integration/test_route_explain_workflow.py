"""`route explain` is a workflow (the route loaded, its candidates filtered, the policy's strategy node, the
explanation) that names, for every strategy, the deployment the router then chooses for the same request, over
random tables; `ratelimits check` says what the router's limiter then decides, using no quota itself."""

from __future__ import annotations

import random

import pytest

from ngm.dataplane.limits.limiter import Limits
from ngm.errors import RateLimited, ValidationFailed
from ngm.nodes.auth.keys import Principal
from ngm.nodes.routing.service import RoutingService
from ngm.workflows.executor import Executor

pytestmark = pytest.mark.anyio
STRATEGIES = ("weighted", "round_robin", "least_connections", "geographic")
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")


@pytest.fixture
async def live(monitor_ctx):
    """A serving process's routing (its table, states and circuits), without its background loops."""
    ctx = monitor_ctx
    service = RoutingService(ctx)
    await service.refresh_table()
    ctx.routing = service
    yield ctx
    ctx.routing = None
    await service.pool.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_the_explanation_names_the_deployment_the_router_then_chooses(live, org, strategy):
    ctx, rng = live, random.Random(f"explain-{strategy}")
    executor, owner = Executor(ctx), Principal(org, "org_owner", "key_owner", "owner")
    deployments = []
    for i in range(5):
        gw = await executor.run("gateways_create", owner, {
            "name": f"g{i}", "environment": "production", "api_url": f"http://g{i}.internal",
            "region": REGIONS[i % 3]})
        weight = rng.choice((0, 10, 50, 90))
        deployments.append(await executor.run("deployments_create", owner, {
            "gateway_id": gw["id"], "agent_id": "bot", "agent_version": f"v{i}", "weight": weight}))
    await executor.run("routing_set", owner, {
        "agent_id": "bot", "environment": "production", "strategy": strategy,
        "sticky": strategy != "least_connections" and rng.random() < 0.5,
        "fallback": rng.choice(("any_region", "none")), "fallback_regions": rng.sample(REGIONS, 1)})
    router = ctx.routing.router
    scope = (org, "bot", "production")
    chosen_ids, steps_seen = set(), set()
    for step in range(40):
        targets = router.table.targets[scope]
        what = rng.random()  # the table changes under the requests, as health, circuits and load do
        t = rng.choice(targets)
        if what < 0.15:
            t.gateway.health_status = rng.choice(("healthy", "unhealthy", "degraded", "unknown"))
        elif what < 0.25:
            for _ in range(router.breakers.threshold):
                router.breakers.failure(t.gateway.id)
        elif what < 0.35:
            router.breakers.success(t.gateway.id)
        elif what < 0.5:
            ctx.inflight.counts[t.deployment_id] = rng.randrange(0, 20)
        request = {"region": rng.choice((None, *REGIONS))}
        if rng.random() < 0.5:
            request["routing_key"] = f"user-{rng.randrange(8)}"
        explained = await executor.run("route_explain", owner, {"agent_id": "bot", "environment": "production",
                                                                **request})
        decision = router.decide(*scope, region=request["region"], routing_key=request.get("routing_key", "key_owner"),
                                 key_source="routing_key" if "routing_key" in request else "api_key")
        expected = decision.chosen.deployment_id if decision.chosen else None
        assert (explained["deployment"] or {}).get("deployment_id") == expected, (step, explained["reason"])
        assert [s["node"] for s in explained["steps"]][:2] == ["LoadRouteNode", "FilterCandidatesNode"]
        steps_seen.add(explained["steps"][2]["node"])
        assert len(explained["candidates"]) + len(explained["skipped"]) == len(targets)
        chosen_ids.add(expected)
    assert steps_seen == {f"{''.join(w.title() for w in strategy.split('_'))}RoutingNode"}
    assert len(chosen_ids - {None}) >= 2  # the walk went through more than one choice


async def test_ratelimits_check_says_what_the_router_then_decides_and_uses_no_quota(live, org):
    ctx = live
    executor, owner = Executor(ctx), Principal(org, "org_owner", "key_owner", "owner")
    gw = await executor.run("gateways_create", owner, {"name": "limited", "environment": "production",
                                                       "api_url": "http://limited.internal", "per_user_rate_limit": 3,
                                                       "global_rate_limit": 50, "rate_limit_window": 60})
    dep = await executor.run("deployments_create", owner, {"gateway_id": gw["id"], "agent_id": "bot",
                                                           "agent_version": "v1"})
    key = await executor.run("keys_create", owner, {"name": "caller", "role": "org_member"})
    caller = Principal(org, "org_member", key["id"], "caller")
    ask = {"agent_id": "bot", "environment": "production", "key_id": key["id"], "client_ip": "192.0.2.7",
           "path": "workflows/chat/execute"}
    for _ in range(10):  # asking uses nothing
        check = await executor.run("ratelimits_check", owner, ask)
        assert (check["admitted"], check["status"], check["scope"]) == (True, 200, "user")
        assert check["deployment_id"] == dep["id"] and check["gateway_id"] == gw["id"]
    limits = Limits(global_limit=50, per_user=3, window_ms=60_000)
    for i in range(3):
        check = await executor.run("ratelimits_check", owner, ask)
        user = next(s for s in check["scopes"] if s["scope"] == "user")
        assert check["admitted"] and (user["used"], user["remaining"]) == (i, 3 - i)  # as it stands, this one not in
        await ctx.limiter.check(caller, limits, gw["id"], "bot", None, False)  # the router's own check
    check = await executor.run("ratelimits_check", owner, ask)
    assert (check["admitted"], check["status"], check["scope"]) == (False, 429, "user")
    assert next(s for s in check["scopes"] if s["scope"] == "gateway")["admitted"] is True
    with pytest.raises(RateLimited) as refused:
        await ctx.limiter.check(caller, limits, gw["id"], "bot", None, False)
    assert refused.value.details[0]["scope"] == "user"
    mine = await executor.run("ratelimits_check", caller, {"agent_id": "bot", "environment": "production"})
    assert mine["key_id"] == key["id"] and mine["admitted"] is False  # the caller's own key by default
    nobody = await executor.run("ratelimits_check", owner, {"agent_id": "ghost", "environment": "production"})
    assert (nobody["admitted"], nobody["status"], nobody["deployment_id"]) == (False, 404, None)
    assert nobody["reason"] == "agent ghost has no deployments in production"


@pytest.mark.parametrize("field, value", [("client_ip", "999.1.1.1"), ("path", "../etc/passwd"),
                                          ("path", "a/%2e%2e/b"), ("key_id", "bad id"), ("region", "no such")])
async def test_ratelimits_check_refuses_what_the_router_would_refuse_by_field(live, org, field, value):
    executor, owner = Executor(live), Principal(org, "org_owner", "key_owner", "owner")
    with pytest.raises(ValidationFailed) as refused:
        await executor.run("ratelimits_check", owner, {"agent_id": "bot", "environment": "production", field: value})
    assert refused.value.field == field
