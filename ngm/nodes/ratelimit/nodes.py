"""Kailash nodes for rate limits: a gateway's configured limits and current usage per scope, and whether a
request would be admitted now (`ratelimits check`).

Both read the process's limiter, the object the router calls in process for every forwarded request (no
workflow execution per request), and only peek at it: no quota is used.
"""

from __future__ import annotations

import math

from kailash.nodes.base import register_node

from ngm.dataplane.limits.limiter import Limits, refusal_of, request_scopes, tightest_scope
from ngm.errors import RateLimited
from ngm.models.query import select, select_one
from ngm.nodes.auth.store import get_key
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.gateways import store as gateways


@register_node()
class GetRateLimitsNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        ctx, org = self.ctx, kw["organization_id"]
        gateway = await gateways.get_gateway(self.db, org, kw["resource_id"])
        limits, gid = Limits.of_gateway(gateway), gateway["id"]
        limiter = ctx.limiter
        rows = await select(self.db, "GatewayDeployment", {"organization_id": org, "gateway_id": gid})
        agents: dict[str, int | None] = {}
        for d in rows:
            if d["status"] != "inactive" and (d["agent_id"] not in agents or d.get("rate_limit") is not None):
                agents[d["agent_id"]] = d.get("rate_limit")
        users = await limiter.users_seen(gid, limits)
        keys = {k["id"]: k for k in await select(self.db, "ApiKey", {"organization_id": org})}
        peeks = [("gateway", None, request_scopes(limits, gid, "-", "-", 0, 0))]
        peeks += [("agent", a, request_scopes(limits, gid, a, "-", o, 0)) for a, o in sorted(agents.items())]
        peeks += [("user", u, request_scopes(limits, gid, "-", u, 0, keys[u].get("rate_limit")))
                  for u in users if u in keys]
        report = {"gateway": None, "agents": [], "users": []}
        for name, who, scopes in peeks:
            scope = next((s for s in scopes if s.name == name), None)
            entry = {"limit": 0, "used": None, "remaining": None, "reset_seconds": None}
            if scope is not None:
                [outcome] = await limiter.decide([scope], gid, peek=True)
                entry = {"limit": scope.limit, "used": outcome.used, "remaining": outcome.remaining,
                         "reset_seconds": math.ceil(outcome.reset_ms / 1000)}
            if name == "gateway":
                report["gateway"] = entry
            elif name == "agent":
                report["agents"].append({"agent_id": who, "override": agents[who] is not None, **entry})
            else:
                report["users"].append({"key_id": who, "key_name": keys[who]["name"],
                                        "override": keys[who].get("rate_limit") is not None, **entry})
        rejected = await limiter.rejections(gid)
        return {"usage": {
            "gateway_id": gid, "window_seconds": gateway["rate_limit_window"],
            "algorithm": gateway["rate_limit_algorithm"], "burst": gateway["rate_limit_burst"],
            "configured": {"global_rate_limit": gateway["global_rate_limit"],
                           "per_agent_rate_limit": gateway["per_agent_rate_limit"],
                           "per_user_rate_limit": gateway["per_user_rate_limit"]},
            **report, "rejected": {s: rejected.get(s, 0) for s in ("gateway", "agent", "user")},
            "limiter": limiter.status()}}


@register_node()
class CheckRateLimitsNode(ContextNode):
    """Would the router admit a request of this caller for this agent now: the deployment the route explanation
    chose, its gateway's limits as the router holds them, and the limiter's own decision, peeked at (no quota
    is used)."""

    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED),
              "route": (dict, REQUIRED)}

    async def async_run(self, **kw):
        org, p, route, actor = kw["organization_id"], kw["params"], kw["route"], kw["actor"]
        key_id = p.get("key_id") or actor["id"]
        if key_id != actor["id"]:
            user_override = (await get_key(self.db, org, key_id)).get("rate_limit")  # 404 for no such key
        else:  # the caller's own (a local operator has no key row)
            own = await select_one(self.db, "ApiKey", {"id": key_id, "organization_id": org})
            user_override = own.get("rate_limit") if own else None
        out = {"agent_id": route["agent_id"], "environment": route["environment"], "key_id": key_id,
               "client_ip": p.get("client_ip"), "path": p.get("path"), "deployment_id": None, "gateway_id": None,
               "scopes": [], "limiter": self.ctx.limiter.status()}
        chosen = route["deployment"]
        if chosen is None:
            return {"check": out | {"admitted": False, "status": 404 if not route["known"] else 503,
                                    "scope": None, "reason": route["reason"]}}
        router = await self.ctx.live_router()
        target = next((t for t in router.table.targets.get((org, route["agent_id"], route["environment"]), ())
                       if t.deployment_id == chosen["deployment_id"]), None)
        if target is None:  # changed between the two steps: as the router would find it now
            return {"check": out | {"admitted": False, "status": 503, "scope": None,
                                    "reason": "the chosen deployment left the routing table; try again"}}
        gateway = target.gateway
        out |= {"deployment_id": target.deployment_id, "gateway_id": gateway.id}
        try:
            scopes, outcomes = await self.ctx.limiter.peek(key_id, user_override, gateway.limits, gateway.id,
                                                          route["agent_id"], target.rate_limit, target.fail_closed)
        except RateLimited as unavailable:  # the limiter cannot decide and the deployment fails closed
            return {"check": out | {"admitted": False, "status": unavailable.status, "scope": None,
                                    "reason": unavailable.message}}
        out |= {
                "scopes": [{"scope": s.name, "limit": s.limit, "used": o.used, "remaining": o.remaining,
                            "reset_seconds": math.ceil(o.reset_ms / 1000), "admitted": o.allowed,
                            "retry_after_seconds": math.ceil(o.retry_ms / 1000) if not o.allowed else 0}
                           for s, o in zip(scopes, outcomes)]}
        if not scopes:
            return {"check": out | {"admitted": True, "status": 200, "scope": None, "reason": "no limits set"}}
        tightest = tightest_scope(scopes, outcomes)
        refused = refusal_of(scopes, outcomes)  # the router's own verdict on these outcomes
        if refused is not None:
            return {"check": out | {"admitted": False, "status": refused.status, "scope": scopes[tightest].name,
                                    "reason": refused.message}}
        return {"check": out | {"admitted": True, "status": 200, "scope": scopes[tightest].name,
                                "reason": f"within every limit; the tightest is the {scopes[tightest].name} scope"}}
