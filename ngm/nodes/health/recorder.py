"""Turn probe results into health state, history rows, status changes and events.

One path for the monitor's batches and for manual checks, so both follow the same hysteresis. A batch is
one transaction: the gateways' new state, their history rows, status moves, transitions and the webhook
deliveries those queue commit together, and events are published once they have. The administrative
status is changed by compare-and-set against the database, so an operator who just set a gateway inactive
is never overwritten by a probe that was already in flight.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ngm.errors import NotFound
from ngm.models.database import Queries, Transaction
from ngm.models.rows import iso, new_id, utcnow
from ngm.nodes.events.bus import HEALTH_PROBE
from ngm.nodes.events.store import make_event, record_transitions
from ngm.nodes.health.probe import ProbeResult
from ngm.nodes.health.state import HealthPolicy, HealthState, admin_status, step

log = logging.getLogger("ngm.health")


def evaluate(gateway: dict, result: ProbeResult, now: datetime, source: str) -> tuple[dict, HealthState]:
    policy = HealthPolicy.of(gateway)
    created = gateway.get("created_at")
    in_grace = created is not None and (now - created).total_seconds() < policy.grace_period
    new = step(HealthState.of(gateway), policy, result.ok, result.response_time_ms,
               impaired=bool(result.unhealthy_workflows), in_grace=in_grace)
    record = {"id": new_id(), "gateway_id": gateway["id"], "organization_id": gateway["organization_id"],
              "checked_at": now, "ok": result.ok, "outcome": result.outcome, "summary": result.summary,
              "http_status": result.http_status, "response_time_ms": round(result.response_time_ms, 2),
              "error": result.error, "unhealthy_workflows": result.unhealthy_workflows, "source": source,
              **new.columns()}
    return record, new


class HealthRecorder:
    def __init__(self, store, bus):
        self.store, self.bus = store, bus

    async def record(self, items: list[tuple[dict, ProbeResult]], source: str = "monitor",
                     now: datetime | None = None) -> list[dict]:
        """items: (gateway row, probe result). Gateway rows are updated in place to the new state.
        Returns one summary per item: the probe, the resulting health and status, and any transition.
        A whole batch costs a handful of statements, however many gateways change."""
        async with self.store.database.transaction() as tx:
            return await self._record(tx, items, source, now or utcnow())

    async def record_check(self, organization_id: str, gateway_id: str, result: ProbeResult) -> dict:
        """A manual check, recorded against the gateway as it is now (locked: its counters are current)."""
        async with self.store.database.transaction() as tx:
            row = await self.store.gateway(tx, gateway_id)
            if row is None or row["organization_id"] != organization_id:
                raise NotFound(f"gateway {gateway_id} not found", field="gateway_id")
            [summary] = await self._record(tx, [(row, result)], "manual", utcnow())
            return summary

    async def _record(self, tx: Transaction, items: list[tuple[dict, ProbeResult]], source: str, now: datetime
                      ) -> list[dict]:
        evaluated = [(g, r, *evaluate(g, r, now, source)) for g, r in items]
        await self.store.write_results(tx, [rec for _, _, rec, _ in evaluated])
        statuses = await self._follow_statuses(tx, {g["id"]: g["status"] for g, *_ in evaluated},
                                               {g["id"]: new.health_status for g, _, _, new in evaluated})
        summaries, transitions = [], []
        for gateway, result, rec, new in evaluated:
            old_health, old_status = gateway.get("health_status") or "unknown", gateway["status"]
            status = statuses[gateway["id"]]
            gateway.update(new.columns(), status=status, last_health_check=now)
            summary = {"gateway_id": gateway["id"], "status": new.health_status, "gateway_status": status,
                       "last_check": iso(now), "response_time_ms": rec["response_time_ms"],
                       "outcome": result.summary, "http_status": result.http_status, "error": result.error,
                       "unhealthy_workflows": result.unhealthy_workflows, "transition": None}
            summaries.append(summary)
            if (old_health, old_status) != (new.health_status, status):
                transitions.append((summary, {
                    "organization_id": gateway["organization_id"], "gateway_id": gateway["id"],
                    "gateway_name": gateway.get("name") or "", "occurred_at": now,
                    "from_health": old_health, "to_health": new.health_status,
                    "from_status": old_status, "to_status": status,
                    "reason": result.summary if not result.ok else f"{new.successes} consecutive successes"}))
                log.info("gateway %s: %s/%s -> %s/%s (%s)", gateway["id"], old_health, old_status,
                         new.health_status, status, result.summary)
        events = await record_transitions(tx, self.bus, [t for _, t in transitions])
        for (summary, _), event in zip(transitions, events):
            summary["transition"] = event["data"]
        probes = [make_event(HEALTH_PROBE, g["organization_id"], summary, occurred_at=now)
                  for g, summary in zip((g for g, *_ in evaluated), summaries)]

        async def publish():
            await self.bus.publish_many(probes)

        tx.after_commit(publish)
        return summaries

    async def _follow_statuses(self, tx: Queries, believed: dict[str, str], health: dict[str, str]
                               ) -> dict[str, str]:
        """Move administrative statuses after the health (active <-> error) by compare-and-set in bulk;
        where someone changed a status meanwhile, decide again from what is stored now."""
        result = dict(believed)
        pending = {gid for gid in result if admin_status(result[gid], health[gid]) != result[gid]}
        for _ in range(3):
            if not pending:
                break
            groups: dict[tuple[str, str], list[str]] = {}
            for gid in pending:
                groups.setdefault((result[gid], admin_status(result[gid], health[gid])), []).append(gid)
            moved = set()
            for (expected, target), ids in groups.items():
                done = await self.store.move_statuses(tx, expected, target, ids)
                result.update({gid: target for gid in done})
                moved |= done
            stale = pending - moved
            current = await self.store.statuses(tx, sorted(stale)) if stale else {}
            result.update(current)  # deleted gateways keep what we believed
            pending = {gid for gid in current if admin_status(current[gid], health[gid]) != current[gid]}
        return result
