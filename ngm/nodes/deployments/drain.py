"""Finish drains: a draining deployment becomes inactive once no request is in flight anywhere (and every
instance has had time to stop sending it new ones), or at its drain deadline. When the other instances'
counts cannot be read (Redis down here), or one of them has gone quiet for less than the gateway's
request_timeout (Redis down there), only the deadline finishes a drain: a partial view could declare it done
while another instance still has requests in flight on it."""

from __future__ import annotations

import logging
from datetime import timedelta

from ngm.dataplane.inflight import SharedViewUnavailable
from ngm.models.query import select
from ngm.models.rows import utcnow
from ngm.nodes.audit.nodes import record_event
from ngm.nodes.deployments.store import finish_drain

log = logging.getLogger("ngm.deployments")
SETTLE_SECONDS = 2.5  # a routing table refresh and an in-flight publication, everywhere
PRESENT_SECONDS = 16.0  # three missed heartbeats (HEARTBEAT_SECONDS) and an instance is taken for gone


async def finish_drains(ctx) -> list[str]:
    rows = await select(ctx.database, "GatewayDeployment", {"status": "draining"})
    timeouts = {g["id"]: g["request_timeout"] for g in await select(
        ctx.database, "Gateway", {"id": ("in", sorted({r["gateway_id"] for r in rows}))})} if rows else {}
    now, done = utcnow(), []
    present: tuple = ()
    if rows and ctx.redis is not None:  # instances heard of through the database, Redis or not
        present = tuple(i["id"] for i in await select(ctx.database, "Instance",
                                                      {"last_seen": (">", now - timedelta(seconds=PRESENT_SECONDS))}))
    for row in rows:
        started, deadline = row["drain_started_at"], row["drain_deadline"]
        timed_out = deadline is not None and now >= deadline
        patience = (timeouts.get(row["gateway_id"]) or 30.0) + SETTLE_SECONDS  # its requests' time limit
        try:
            in_flight: int | None = await ctx.inflight.total_everywhere(row["id"], patience, present)
        except SharedViewUnavailable:
            in_flight = None
        settled = started is None or (now - started).total_seconds() >= SETTLE_SECONDS
        if not (timed_out or (settled and in_flight == 0)):
            continue
        async with ctx.database.transaction() as tx:
            if not await finish_drain(tx, row["id"]):
                continue
            await record_event(tx, row["organization_id"], {"id": "system", "name": "drain"}, "deployment.drained",
                               {"resource_type": "deployment", "resource_id": row["id"],
                                "changes": {"status": {"from": "draining", "to": "inactive"},
                                            "abandoned_in_flight": {"to": in_flight if timed_out else 0}}})
        log.info("deployment %s drained%s", row["id"], f" ({in_flight} still in flight at the deadline)"
                 if timed_out and in_flight else "")
        done.append(row["id"])
    if done:
        await ctx.routing_changed()
    return done
