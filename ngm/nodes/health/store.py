"""Health data in bulk: the monitor's reads and batched writes (one executemany per batch: for 1,000 rows
15 ms on SQLite and 38 ms on PostgreSQL, where one statement per row took seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ngm.models import TABLES
from ngm.models.database import Json, Queries
from ngm.models.query import chunks, decode, delete, insert_many, stored_float
from ngm.models.rows import iso, utcnow

_MONITOR_COLUMNS = (
    "id, organization_id, name, api_url, api_port, health_check_url, api_key_encrypted, status, health_status, "
    "health_check_interval, health_check_timeout, healthy_threshold, unhealthy_threshold, degraded_latency_ms, "
    "health_grace_period, health_successes, health_failures, health_slow, health_fast, last_health_check, "
    "created_at"
)
_GATEWAYS, _CHECKS = TABLES["Gateway"], TABLES["HealthCheck"]
PAGE = 500  # gateways read per statement by a full re-read (decoded on the loop: a few ms)


def _in(values: list[str], params: dict[str, Any]) -> str:
    names = {f"v{i:05d}": v for i, v in enumerate(values)}
    params.update(names)
    return "(" + ", ".join(":" + n for n in names) + ")"


class HealthStore:
    def __init__(self, database: Queries):
        self.database = database

    async def monitored_gateway_pages(self, size: int = PAGE) -> AsyncIterator[list[dict[str, Any]]]:
        """Every gateway the monitor probes (all but the inactive ones), in pages by id (keyset: a page is one
        short statement however many gateways there are)."""
        after = ""
        while True:
            rows = await self.database.rows(
                f"SELECT {_MONITOR_COLUMNS} FROM gateways WHERE status <> 'inactive' AND id > :after "
                "ORDER BY id LIMIT :size", {"after": after, "size": size})
            if rows:
                yield [decode(_GATEWAYS, row) for row in rows]
            if len(rows) < size:
                return
            after = rows[-1]["id"]

    async def monitored_gateways_of(self, organizations: list[str]) -> list[dict[str, Any]]:
        out = []
        for part in chunks(organizations):
            params: dict[str, Any] = {}
            rows = await self.database.rows(f"SELECT {_MONITOR_COLUMNS} FROM gateways WHERE status <> 'inactive' "
                                            f"AND organization_id IN {_in(part, params)}", params)
            out += [decode(_GATEWAYS, row) for row in rows]
        return out

    async def gateway(self, q: Queries, gateway_id: str) -> dict[str, Any] | None:
        """One gateway's row as the monitor reads it, locked (a manual check records against it)."""
        row = await q.row(f"SELECT {_MONITOR_COLUMNS} FROM gateways WHERE id = :id{q.lock}", {"id": gateway_id})
        return decode(_GATEWAYS, row) if row else None

    async def statuses(self, q: Queries, gateway_ids: list[str]) -> dict[str, str]:
        out = {}
        for part in chunks(gateway_ids):
            params: dict[str, Any] = {}
            rows = await q.rows(f"SELECT id, status FROM gateways WHERE id IN {_in(part, params)}", params)
            out.update({r["id"]: r["status"] for r in rows})
        return out

    async def move_statuses(self, q: Queries, expected: str, new: str, gateway_ids: list[str]) -> set[str]:
        """Compare-and-set of the administrative status for many gateways: only those still `expected`
        move, so an operator's change is never overwritten. Returns the ids that moved."""
        moved: set[str] = set()
        for part in chunks(sorted(gateway_ids)):
            params: dict[str, Any] = {"new": new, "expected": expected, "now": utcnow()}
            rows = await q.rows(f"UPDATE gateways SET status = :new, updated_at = :now WHERE status = :expected "
                                f"AND id IN {_in(part, params)} RETURNING id", params)
            moved.update(r["id"] for r in rows)
        return moved

    async def write_results(self, q: Queries, records: list[dict[str, Any]]) -> None:
        """records: {gateway_id, organization_id, checked_at, state columns, probe fields, source}, written in
        the order of their gateway ids (concurrent batches then lock rows in the same order)."""
        records = sorted(records, key=lambda r: r["gateway_id"])
        await q.many(
            "UPDATE gateways SET health_status = :health_status, health_successes = :health_successes, "
            "health_failures = :health_failures, health_slow = :health_slow, health_fast = :health_fast, "
            "last_health_check = :checked_at, last_health_status = :summary, "
            "last_response_time_ms = :response_time_ms, unhealthy_workflows = :wf WHERE id = :gateway_id",
            [{k: r[k] for k in ("health_status", "health_successes", "health_failures", "health_slow",
                                "health_fast", "checked_at", "summary", "gateway_id")}
             | {"wf": Json(r["unhealthy_workflows"]), "response_time_ms": None if r["response_time_ms"] is None
                else stored_float(r["response_time_ms"])}
             for r in records])
        await insert_many(q, "HealthCheck", [
            {k: r[k] for k in ("id", "organization_id", "gateway_id", "checked_at", "ok", "outcome", "http_status",
                               "response_time_ms", "health_status", "error", "unhealthy_workflows", "source")}
            for r in records])

    async def history(self, gateway_id: str, since: datetime, limit: int) -> list[dict[str, Any]]:
        rows = await self.database.rows(
            "SELECT checked_at, ok, outcome, http_status, response_time_ms, health_status, error, "
            "unhealthy_workflows, source FROM health_checks WHERE gateway_id = :g AND checked_at >= :since "
            "ORDER BY checked_at DESC LIMIT :limit", {"g": gateway_id, "since": since, "limit": limit})
        for row in rows:
            decode(_CHECKS, row)
            row["checked_at"] = iso(row["checked_at"])
            row["response_time_ms"] = round(float(row["response_time_ms"]), 2)
            row["unhealthy_workflows"] = row["unhealthy_workflows"] or []
        return rows

    async def samples(self, gateway_id: str, since: datetime) -> list[tuple[bool, float]]:
        rows = await self.database.rows("SELECT ok, response_time_ms FROM health_checks WHERE gateway_id = :g AND "
                                        "checked_at >= :since", {"g": gateway_id, "since": since})
        return [(bool(r["ok"]), float(r["response_time_ms"])) for r in rows]

    async def prune(self, before: datetime) -> int:
        return await delete(self.database, "HealthCheck", {"checked_at": ("<", before)})
