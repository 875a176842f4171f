"""Kailash node for GET /gateways/{id}/rate-limits: configured limits and current usage per scope.

It reads the process's limiter, the object the router calls in process for every forwarded request (no
workflow execution per request).
"""

from __future__ import annotations

import math

from kailash.nodes.base import register_node

from ngm.models.query import select
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.deployments import store as deployments
from ngm.nodes.gateways import store as gateways
from ngm.nodes.ratelimit.limiter import Limits, request_scopes


@register_node()
class RateLimitUsageNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        ctx, org = self.ctx, kw["organization_id"]
        gateway = await gateways.fetch(self.db, org, kw["resource_id"])
        limits, gid = Limits.of_gateway(gateway), gateway["id"]
        limiter = ctx.limiter
        rows, _ = await deployments.list_page(self.db, org, {"gateway_id": gid}, 500, 0)
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
