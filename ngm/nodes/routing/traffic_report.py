"""GET /api/v1/agents/{agent_id}/traffic: configured split next to observed split, per deployment."""

from __future__ import annotations

from ngm.dataplane.traffic import KEEP_SECONDS, summarize
from ngm.models.database import Queries
from ngm.models.query import select
from ngm.nodes.deployments.store import view
from ngm.nodes.health.stats import parse_window


async def traffic_report(ctx, q: Queries, organization_id: str, agent_id: str, params: dict) -> dict:
    environment, window = params["environment"], params["window"]
    seconds = int(min(parse_window(window).total_seconds(), KEEP_SECONDS))
    rows = await select(q, "GatewayDeployment", {"organization_id": organization_id, "agent_id": agent_id},
                        order=["id"], limit=10_000)
    gateways = {g["id"]: g for g in await select(
        q, "Gateway", {"organization_id": organization_id, "environment": environment})}
    deployments = [view(r) for r in rows if r["gateway_id"] in gateways]
    figures, complete = await ctx.traffic_window([d["id"] for d in deployments], seconds)
    total = sum(b.requests for b in figures.values())
    live_weight = sum(d["weight"] for d in deployments if d["status"] == "active") or 0
    items = []
    for d in deployments:
        gw = gateways[d["gateway_id"]]
        configured = 100.0 * d["weight"] / live_weight if live_weight and d["status"] == "active" else 0.0
        b = figures[d["id"]]
        items.append({"deployment_id": d["id"], "gateway_id": gw["id"], "gateway_name": gw["name"],
                      "region": gw["region"], "agent_version": d["agent_version"], "status": d["status"],
                      "weight": d["weight"], "configured_share_percent": round(configured, 2),
                      "observed_share_percent": round(100.0 * b.requests / total, 2) if total else 0.0,
                      "in_flight": await ctx.inflight.total(d["id"]), **summarize(b, seconds)})
    return {"agent_id": agent_id, "environment": environment, "window": window, "window_seconds": seconds,
            "requests": total, "complete": complete, "deployments": items}
