"""Deployments, routing policies, drains and route explanation through the executor, on both databases."""

from collections import Counter

import anyio
import pytest

from ngm.errors import Conflict, Forbidden, NotFound, ValidationFailed
from ngm.models.query import update
from ngm.nodes.auth.keys import Principal
from ngm.nodes.deployments.drain import finish_drains
from ngm.workflows.executor import Executor
from tests.integration.conftest import as_role

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(monitor_ctx, org):
    ctx = monitor_ctx
    executor = Executor(ctx)
    owner = Principal(org, "org_owner", "key_owner", "owner")

    async def gateway(name, **extra):
        return await executor.run("gateways_create", owner, {"name": name, "environment": "production",
                                                             "api_url": f"http://{name}.internal", **extra})

    async def deploy(gw, version="v1", weight=100, agent="support-bot"):
        return await executor.run("deployments_create", owner, {"gateway_id": gw["id"], "agent_id": agent,
                                                                "agent_version": version, "weight": weight})

    return ctx, executor, owner, gateway, deploy


async def explain(executor, owner, **extra):
    return await executor.run("route_explain", owner, {"agent_id": "support-bot", "environment": "production",
                                                       **extra})


async def test_deployment_lifecycle(env):
    ctx, executor, owner, gateway, deploy = env
    gw = await gateway("g1")
    dep = await deploy(gw, weight=90)
    assert (dep["status"], dep["is_active"], dep["weight"], dep["in_flight"]) == ("active", True, 90, 0)
    assert dep["deployed_by"] == "owner" and dep["organization_id"] == owner.organization_id
    with pytest.raises(Conflict):
        await deploy(gw, weight=10)  # same version on the same gateway
    other = await deploy(gw, version="v2", weight=10)
    page = await executor.run("deployments_list", owner, {"gateway_id": gw["id"]})
    assert page["total"] == 2 and {d["agent_version"] for d in page["items"]} == {"v1", "v2"}
    assert (await executor.run("deployments_update", owner, {"weight": 50}, dep["id"]))["weight"] == 50
    off = await executor.run("deployments_deactivate", owner, None, dep["id"])
    assert (off["status"], off["is_active"]) == ("inactive", False)
    assert (await executor.run("deployments_list", owner, {"status": "inactive"}))["total"] == 1
    assert (await executor.run("deployments_activate", owner, None, dep["id"]))["status"] == "active"
    await executor.run("deployments_delete", owner, None, other["id"])
    with pytest.raises(NotFound):
        await executor.run("deployments_get", owner, None, other["id"])
    actions = [e["action"] for e in (await executor.run("audit_list", owner, {"resource_type": "deployment"}))["items"]]
    assert actions == ["deployment.delete", "deployment.activate", "deployment.deactivate", "deployment.update",
                       "deployment.create", "deployment.create"]


async def test_deployments_only_on_the_callers_gateways(env):
    ctx, executor, owner, gateway, deploy = env
    gw = await gateway("mine")
    stranger = Principal("other-" + owner.organization_id, "org_owner", "k")
    with pytest.raises(NotFound) as info:
        await executor.run("deployments_create", stranger, {"gateway_id": gw["id"], "agent_id": "a",
                                                            "agent_version": "1"})
    assert info.value.field == "gateway_id"
    dep = await deploy(gw)
    for name, params in [("deployments_get", None), ("deployments_update", {"weight": 1}),
                         ("deployments_drain", {}), ("deployments_delete", None)]:
        with pytest.raises(NotFound):
            await executor.run(name, stranger, params, dep["id"])
    with pytest.raises(Forbidden):
        await executor.run("deployments_update", as_role(owner, "org_member"), {"weight": 1}, dep["id"])


@pytest.mark.parametrize("body, field", [
    ({"agent_id": "bad id"}, "agent_id"), ({"agent_version": "has space"}, "agent_version"),
    ({"weight": -1}, "weight"), ({"weight": 10_001}, "weight"), ({"gateway_id": None}, "gateway_id"),
])
async def test_deployment_validation(env, body, field):
    ctx, executor, owner, gateway, deploy = env
    with pytest.raises(ValidationFailed) as info:
        await executor.run("deployments_create", owner, {"gateway_id": "g", "agent_id": "a", "agent_version": "1",
                                                         **body})
    assert info.value.details[0]["field"] == field


async def test_drain_waits_for_requests_in_flight_then_goes_inactive(env):
    ctx, executor, owner, gateway, deploy = env
    dep = await deploy(await gateway("drained"))
    ctx.inflight.start(dep["id"])
    ctx.inflight.start(dep["id"])
    draining = await executor.run("deployments_drain", owner, {"timeout_seconds": 60}, dep["id"])
    assert (draining["status"], draining["in_flight"], draining["is_active"]) == ("draining", 2, True)
    assert draining["drain_deadline"] > draining["drain_started_at"]
    await anyio.sleep(2.6)  # settled: every instance has stopped sending it new requests
    assert await finish_drains(ctx) == []
    ctx.inflight.finish(dep["id"])
    assert await finish_drains(ctx) == []
    ctx.inflight.finish(dep["id"])
    assert await finish_drains(ctx) == [dep["id"]]
    done = await executor.run("deployments_get", owner, None, dep["id"])
    assert (done["status"], done["is_active"], done["in_flight"]) == ("inactive", False, 0)
    assert (await executor.run("audit_list", owner, {"action": "deployment.drained"}))["total"] == 1


async def test_drain_deadline_ends_it_even_with_requests_in_flight(env):
    ctx, executor, owner, gateway, deploy = env
    dep = await deploy(await gateway("stuck"))
    ctx.inflight.start(dep["id"])
    await executor.run("deployments_drain", owner, {"timeout_seconds": 0}, dep["id"])
    assert dep["id"] in await finish_drains(ctx)
    ctx.inflight.finish(dep["id"])
    with pytest.raises(ValidationFailed):
        await executor.run("deployments_drain", owner, {}, dep["id"])  # inactive: nothing to drain


async def test_policies_default_set_list_delete(env):
    ctx, executor, owner, gateway, deploy = env
    scope = {"agent_id": "support-bot", "environment": "production"}
    default = await executor.run("routing_get", owner, scope)
    assert default["default"] is True and default["strategy"] == "weighted" and default["id"] is None
    made = await executor.run("routing_set", owner, {**scope, "strategy": "geographic", "fallback": "none",
                                                     "fallback_regions": ["eu-west-1"]})
    assert (made["strategy"], made["fallback"], made["fallback_regions"]) == ("geographic", "none", ["eu-west-1"])
    changed = await executor.run("routing_set", owner, {**scope, "strategy": "weighted", "sticky": True})
    assert changed["id"] == made["id"] and changed["sticky"] is True
    assert [p["agent_id"] for p in (await executor.run("routing_list", owner, {}))["items"]] == ["support-bot"]
    with pytest.raises(ValidationFailed) as info:
        await executor.run("routing_set", owner, {**scope, "strategy": "least_connections", "sticky": True})
    assert "least_connections" in info.value.message
    await executor.run("routing_delete", owner, scope)
    assert (await executor.run("routing_get", owner, scope))["default"] is True
    with pytest.raises(NotFound):
        await executor.run("routing_delete", owner, scope)


async def test_explain_names_the_choice_and_every_skip(env):
    ctx, executor, owner, gateway, deploy = env
    a, b, c, d = [await gateway(n) for n in ("ga", "gb", "gc", "gd")]
    da = await deploy(a, weight=90)
    db = await deploy(b, weight=10)
    dc = await deploy(c, weight=0)
    dd = await deploy(d)
    await update(ctx.database, "Gateway", d["id"], {"health_status": "unhealthy"})
    route = await explain(executor, owner)
    assert route["known"] is True and route["strategy"] == "weighted"
    assert route["deployment"]["deployment_id"] == da["id"]
    assert [(c["deployment_id"], c["share_percent"]) for c in route["candidates"]] == [(da["id"], 90.0),
                                                                                      (db["id"], 10.0)]
    assert {s["deployment_id"]: s["reason"] for s in route["skipped"]} == {dc["id"]: "weight 0",
                                                                          dd["id"]: "gateway unhealthy"}
    # explaining does not consume the sequence: it keeps answering the same
    assert {(await explain(executor, owner))["deployment"]["deployment_id"] for _ in range(5)} == {da["id"]}


async def test_explain_geographic_and_nothing_healthy(env):
    ctx, executor, owner, gateway, deploy = env
    eu = await deploy(await gateway("eu", region="eu-west-1"))
    us = await deploy(await gateway("us", region="us-east-1"))
    await executor.run("routing_set", owner, {"agent_id": "support-bot", "environment": "production",
                                              "strategy": "geographic"})
    route = await explain(executor, owner, region="us-east-1")
    assert route["deployment"]["deployment_id"] == us["id"] and route["region_used"] == "us-east-1"
    await executor.run("deployments_deactivate", owner, None, us["id"])
    route = await explain(executor, owner, region="us-east-1")
    assert route["deployment"]["deployment_id"] == eu["id"] and "fallback" in route["reason"]
    await executor.run("deployments_deactivate", owner, None, eu["id"])
    route = await explain(executor, owner, region="us-east-1")
    assert route["deployment"] is None and route["reason"] == "no eligible deployment"


async def test_explain_for_an_agent_without_deployments(env):
    ctx, executor, owner, gateway, deploy = env
    route = await executor.run("route_explain", owner, {"agent_id": "ghost", "environment": "staging"})
    assert route["known"] is False and route["deployment"] is None
    assert route["reason"] == "agent ghost has no deployments in staging"  # as the router's 404 says


async def test_a_sticky_key_explains_its_home(env):
    ctx, executor, owner, gateway, deploy = env
    deps = [await deploy(await gateway(f"s{i}")) for i in range(3)]
    await executor.run("routing_set", owner, {"agent_id": "support-bot", "environment": "production",
                                              "sticky": True})
    homes = Counter()
    for user in range(60):
        route = await explain(executor, owner, routing_key=f"user-{user}")
        again = await explain(executor, owner, routing_key=f"user-{user}")
        assert route["deployment"]["deployment_id"] == again["deployment"]["deployment_id"]
        assert route["sticky_key_source"] == "routing_key"
        homes[route["deployment"]["deployment_id"]] += 1
    assert set(homes) == {d["id"] for d in deps}
