"""Kailash nodes for routing.

Each strategy is a node over the plain code in ngm/dataplane/strategies.py. The router holds one instance of
each and calls select() in process for every request (no workflow execution per request). `route explain` is
the workflow explain_workflow() composes: the route loaded, its candidates filtered, the policy's strategy
node, the explanation.
"""

from __future__ import annotations

import dataclasses

from kailash.nodes.base import register_node

from ngm.dataplane.strategies import Candidate, Decision, RoutingState, choose, ineligible_reason, pick_target
from ngm.dataplane.table import Policy
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.routing import policies


class StrategyNode(ContextNode):
    """One strategy's choice. The router calls select() (and pick) in process for every request; in the route
    explanation workflow the node takes the filtered route and chooses on the router's live state without
    moving it, so that it names the deployment the router's next request would get."""

    STRATEGY = ""
    PARAMS = {"route": (dict, None)}  # not given on the branches the policy did not choose (they do not run)

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
        route = kw.get("route")
        if route is None:
            return {"decision": None}
        router = await self.ctx.live_router()
        scope = tuple(route["scope"])
        decision = self.select(Policy(**route["policy"]), [Candidate(**c) for c in route["eligible"]],
                               router.state_of(scope), commit=False, **route["request"])
        return {"decision": decision.view() | {"node": type(self).__name__}}


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


def _candidate_fields(c: Candidate) -> dict:
    return {f.name: getattr(c, f.name) for f in dataclasses.fields(Candidate) if f.name != "target"}


@register_node()
class LoadRouteNode(ContextNode):
    """The router's table for one agent in one environment, as this instance routes now: its policy and every
    deployment with its gateway's health, circuit and in-flight count."""

    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p, router = kw["params"], await self.ctx.live_router()
        scope = (kw["organization_id"], p["agent_id"], p["environment"])
        if p.get("routing_key"):
            key, source = p["routing_key"], "routing_key"
        else:
            key, source = kw["actor"].get("id"), "api_key"
        policy = router.table.policy(scope)
        return {"route": {"scope": list(scope), "policy": policy.view(), "strategy": policy.strategy,
                          "known": scope in router.table.targets,
                          "request": {"region": p.get("region"), "routing_key": key, "key_source": source},
                          "candidates": [_candidate_fields(c) for c in router.candidates(scope)]}}


@register_node()
class FilterCandidatesNode(ContextNode):
    """Leaves out what the router would not send to: inactive, draining or weight-0 deployments, gateways
    inactive, in error or unhealthy, open circuits (the strategy then chooses among the rest; geographic
    routing also by the caller's region)."""

    PARAMS = {"route": (dict, REQUIRED)}

    async def async_run(self, **kw):
        route, eligible, skipped = kw["route"], [], []
        for fields in route["candidates"]:
            why = ineligible_reason(Candidate(**fields))
            if why:
                skipped.append(fields | {"reason": why})
            else:
                eligible.append(fields)
        return {"route": route | {"eligible": eligible, "skipped": skipped}}


@register_node()
class ExplainRouteNode(ContextNode):
    """The explanation: the chosen strategy node's decision, with what each step before it saw."""

    PARAMS = {"route": (dict, REQUIRED), **{name: (dict, None) for name in STRATEGY_NODES}}

    async def async_run(self, **kw):
        route = kw["route"]
        decision = next(kw[name] for name in STRATEGY_NODES if kw.get(name))
        _, agent_id, environment = route["scope"]
        skipped = [Candidate(**{k: v for k, v in c.items() if k != "reason"}).view() | {"reason": c["reason"]}
                   for c in route["skipped"]]
        steps = [{"node": "LoadRouteNode", "candidates": len(route["candidates"])},
                 {"node": "FilterCandidatesNode", "eligible": len(route["eligible"]), "skipped": len(skipped)},
                 {"node": decision["node"], "chosen": (decision["deployment"] or {}).get("deployment_id"),
                  "reason": decision["reason"]}]
        out = {k: v for k, v in decision.items() if k != "node"} | {
            "agent_id": agent_id, "environment": environment, "policy": route["policy"], "known": route["known"],
            "skipped": skipped, "steps": steps}
        if not route["known"]:  # as the router says it (404), not "no eligible deployment"
            out["reason"] = f"agent {agent_id} has no deployments in {environment}"
        return {"route": out}


def explain_workflow(then: tuple[str, str, str] | None = None):
    """load -> filter -> the policy's strategy node (a SwitchNode on the strategy) -> explain [-> then].

    then: (module, node type, node id) of a step that takes the explanation as `route`."""
    from ngm.workflows.build import chain

    modules = [__name__]
    steps = [("LoadRouteNode", "load", {}), ("FilterCandidatesNode", "filter", {}),
             ("SwitchNode", "strategy", {"condition_field": "strategy", "cases": list(STRATEGY_NODES)}),
             *((cls.__name__, name, {}) for name, cls in STRATEGY_NODES.items()), ("ExplainRouteNode", "explain", {})]
    links = [("load", "route", "filter", "route"), ("filter", "route", "strategy", "input_data"),
             ("filter", "route", "explain", "route")]
    for name in STRATEGY_NODES:
        links += [("strategy", f"case_{name}", name, "route"), (name, "decision", "explain", name)]
    if then is not None:
        module, node_type, node_id = then
        modules.append(module)
        steps.append((node_type, node_id, {}))
        links.append(("explain", "route", node_id, "route"))
    return chain(modules, steps, links)


@register_node()
class AgentTrafficNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        from ngm.nodes.routing.traffic_report import traffic_report

        report = await traffic_report(self.ctx, self.db, kw["organization_id"], kw["resource_id"], kw["params"])
        return {"traffic": report}


@register_node()
class SetPolicyNode(ContextNode):
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
