"""Kailash nodes for routing.

Each strategy is a node over the plain code in strategies.py. The router holds one instance of each and
calls select() in process for every request (no workflow execution per request); as workflow nodes
they take candidates and a policy and answer the decision without remembering anything.
"""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.routing import policies
from ngm.nodes.routing.strategies import Candidate, Decision, Policy, RoutingState, choose, pick_target


class StrategyNode(ContextNode):
    STRATEGY = ""
    PARAMS = {"candidates": (list, REQUIRED), "policy": (dict, {}), "request": (dict, {})}

    def select(self, policy: Policy, candidates: list[Candidate], state: RoutingState, region: str | None = None,
               routing_key: str | None = None, key_source: str | None = None, exclude: frozenset = frozenset(),
               commit: bool = True) -> Decision:
        # the request's fields spelled out, not **request: this runs for every forwarded request
        return choose(policy, candidates, state, region=region, routing_key=routing_key, key_source=key_source,
                      exclude=exclude, commit=commit)

    # select()'s choice on the routing table's Targets when it can be made without a Decision (else None): the
    # compiled function itself, so that no interpreted frame is paid per routed request (this module is not
    # compiled)
    pick = staticmethod(pick_target)

    async def async_run(self, **kw):
        policy = Policy(**{**kw.get("policy", {}), "strategy": self.STRATEGY})
        candidates = [Candidate(**c) for c in kw["candidates"]]
        decision = self.select(policy, candidates, RoutingState(), **kw.get("request", {}))
        return {"decision": decision.view()}


@register_node()
class WeightedRoutingNode(StrategyNode):
    STRATEGY = "weighted"


@register_node()
class RoundRobinRoutingNode(StrategyNode):
    STRATEGY = "round_robin"


@register_node()
class LeastConnectionsRoutingNode(StrategyNode):
    STRATEGY = "least_connections"


@register_node()
class GeographicRoutingNode(StrategyNode):
    STRATEGY = "geographic"


STRATEGY_NODES = {cls.STRATEGY: cls for cls in (WeightedRoutingNode, RoundRobinRoutingNode,
                                                LeastConnectionsRoutingNode, GeographicRoutingNode)}


def strategy_nodes() -> dict[str, StrategyNode]:
    return {name: cls() for name, cls in STRATEGY_NODES.items()}


@register_node()
class ExplainRouteNode(ContextNode):
    """Which deployment would serve a request, and why; does not move the live sequence."""

    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p, router = kw["params"], await self.ctx.live_router()
        scope = (kw["organization_id"], p["agent_id"], p["environment"])
        if p.get("routing_key"):
            key, source = p["routing_key"], "routing_key"
        else:
            key, source = kw["actor"].get("id"), "api_key"
        decision = router.decide(*scope, region=p.get("region"), routing_key=key, key_source=source, commit=False)
        policy = router.table.policy(scope)
        out = decision.view() | {"agent_id": p["agent_id"], "environment": p["environment"], "policy": policy.view(),
                                 "known": scope in router.table.targets}
        return {"route": out}


@register_node()
class AgentTrafficNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        from ngm.nodes.routing.traffic_report import traffic_report

        report = await traffic_report(self.ctx, self.db, kw["organization_id"], kw["resource_id"], kw["params"])
        return {"traffic": report}


@register_node()
class PutPolicyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = dict(kw["params"])
        agent, env = p.pop("agent_id"), p.pop("environment")
        before, after = await policies.put(self.db, kw["organization_id"], agent, env, p)
        await self.after_commit(self.ctx.routing_changed)
        from ngm.nodes.audit.changes import diff

        return {"policy": after, "audit": {"resource_type": "routing_policy", "resource_id": after["id"],
                                           "changes": diff(before or {}, after)}}


@register_node()
class GetPolicyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        return {"policy": await policies.effective(self.db, kw["organization_id"], p["agent_id"],
                                                   p["environment"])}


@register_node()
class ListPoliciesNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, {})}

    async def async_run(self, **kw):
        agent = (kw.get("params") or {}).get("agent_id")
        return {"policies": {"items": await policies.list_all(self.db, kw["organization_id"], agent)}}


@register_node()
class DeletePolicyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        gone = await policies.remove(self.db, kw["organization_id"], p["agent_id"], p["environment"])
        await self.after_commit(self.ctx.routing_changed)
        return {"deleted": {"agent_id": gone["agent_id"], "environment": gone["environment"]},
                "audit": {"resource_type": "routing_policy", "resource_id": gone["id"],
                          "changes": {"strategy": {"from": gone["strategy"]}}}}
