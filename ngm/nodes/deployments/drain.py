"""Finish drains: a draining deployment becomes inactive once no request is in flight anywhere (and every
instance has had time to stop sending it new ones), or at its drain deadline."""

from __future__ import annotations

import logging

from ngm.models.rows import parse_time, utcnow
from ngm.nodes.audit.nodes import record_event

log = logging.getLogger("ngm.deployments")
SETTLE_SECONDS = 2.5  # a routing table refresh and an in-flight publication, everywhere


async def finish_drains(ctx) -> list[str]:
    rows = await ctx.health_store.sql.rows("SELECT id, organization_id, drain_started_at, drain_deadline FROM "
                                           "gateway_deployments WHERE status = 'draining'")
    now, done = utcnow(), []
    for row in rows:
        started, deadline = parse_time(row["drain_started_at"]), parse_time(row["drain_deadline"])
        in_flight = await ctx.inflight.total(row["id"])
        settled = started is None or (now - started).total_seconds() >= SETTLE_SECONDS
        timed_out = deadline is not None and now >= deadline
        if not (timed_out or (settled and in_flight == 0)):
            continue
        await ctx.db.express.update("GatewayDeployment", row["id"], {"status": "inactive", "is_active": False})
        await record_event(ctx.db, row["organization_id"], {"id": "system", "name": "drain"}, "deployment.drained",
                           {"resource_type": "deployment", "resource_id": row["id"],
                            "changes": {"status": {"from": "draining", "to": "inactive"},
                                        "abandoned_in_flight": {"to": in_flight if timed_out else 0}}})
        log.info("deployment %s drained%s", row["id"], f" ({in_flight} still in flight at the deadline)"
                 if timed_out and in_flight else "")
        done.append(row["id"])
    if done:
        await ctx.routing_changed()
    return done
