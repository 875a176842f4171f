"""Health data in bulk (see ngm.models.sql for why these paths use batched SQL, not db.express)."""

from __future__ import annotations

import json
from datetime import datetime

from ngm.models.rows import iso, parse_time
from ngm.models.sql import Sql, chunks, in_list, json_list

_MONITOR_COLUMNS = (
    "id, organization_id, name, api_url, api_port, health_check_url, api_key_encrypted, status, health_status, "
    "health_check_interval, health_check_timeout, healthy_threshold, unhealthy_threshold, degraded_latency_ms, "
    "health_grace_period, health_successes, health_failures, health_slow, health_fast, last_health_check, "
    "created_at"
)


class HealthStore:
    def __init__(self, database_url: str):
        self.sql = Sql(database_url)
        self._rows, self._many = self.sql.rows, self.sql.many
        self._jsonb = self.sql.json("wf")

    async def monitored_gateways(self) -> list[dict]:
        """Every gateway the monitor probes: all but the inactive ones."""
        rows = await self._rows(f"SELECT {_MONITOR_COLUMNS} FROM gateways WHERE status <> 'inactive'")
        for row in rows:
            row["last_health_check"] = parse_time(row["last_health_check"])
            row["created_at"] = parse_time(row["created_at"])
        return rows

    async def statuses(self, gateway_ids: list[str]) -> dict[str, str]:
        out = {}
        for part in chunks(gateway_ids):
            clause, params = in_list(part)
            out.update({r["id"]: r["status"] for r in await self._rows(
                f"SELECT id, status FROM gateways WHERE id IN {clause}", params)})
        return out

    async def move_statuses(self, expected: str, new: str, gateway_ids: list[str]) -> set[str]:
        """Compare-and-set of the administrative status for many gateways: only those still `expected`
        move, so an operator's change is never overwritten. Returns the ids that moved."""
        moved = set()
        for part in chunks(gateway_ids):
            clause, params = in_list(part)
            rows = await self._rows(f"UPDATE gateways SET status = :new WHERE status = :expected AND id IN {clause} "
                                    "RETURNING id", {"new": new, "expected": expected, **params})
            moved.update(r["id"] for r in rows)
        return moved

    async def write_results(self, records: list[dict]) -> None:
        """records: {gateway_id, organization_id, checked_at, state columns, probe fields, source}."""
        await self._many(
            "UPDATE gateways SET health_status = :health_status, health_successes = :health_successes, "
            "health_failures = :health_failures, health_slow = :health_slow, health_fast = :health_fast, "
            "last_health_check = :checked_at, last_health_status = :summary, "
            f"last_response_time_ms = :response_time_ms, unhealthy_workflows = {self._jsonb} WHERE id = :gateway_id",
            [{k: r[k] for k in ("health_status", "health_successes", "health_failures", "health_slow",
                                "health_fast", "checked_at", "summary", "response_time_ms", "gateway_id")}
             | {"wf": json.dumps(r["unhealthy_workflows"])} for r in records])
        await self._many(
            "INSERT INTO health_checks (id, organization_id, gateway_id, checked_at, ok, outcome, http_status, "
            "response_time_ms, health_status, error, unhealthy_workflows, source) VALUES (:id, :organization_id, "
            ":gateway_id, :checked_at, :ok, :outcome, :http_status, :response_time_ms, :health_status, :error, "
            f"{self._jsonb}, :source)",
            [{k: r[k] for k in ("id", "organization_id", "gateway_id", "checked_at", "ok", "outcome", "http_status",
                                "response_time_ms", "health_status", "error", "source")}
             | {"wf": json.dumps(r["unhealthy_workflows"])} for r in records])

    async def history(self, gateway_id: str, since: datetime, limit: int) -> list[dict]:
        rows = await self._rows(
            "SELECT checked_at, ok, outcome, http_status, response_time_ms, health_status, error, "
            "unhealthy_workflows, source FROM health_checks WHERE gateway_id = :g AND checked_at >= :since "
            "ORDER BY checked_at DESC LIMIT :limit", {"g": gateway_id, "since": since, "limit": limit})
        for row in rows:
            row["checked_at"] = iso(row["checked_at"])
            row["ok"] = bool(row["ok"])
            row["response_time_ms"] = round(float(row["response_time_ms"]), 2)
            row["unhealthy_workflows"] = json_list(row["unhealthy_workflows"])
        return rows

    async def samples(self, gateway_id: str, since: datetime) -> list[tuple[bool, float]]:
        rows = await self._rows("SELECT ok, response_time_ms FROM health_checks WHERE gateway_id = :g AND "
                                "checked_at >= :since", {"g": gateway_id, "since": since})
        return [(bool(r["ok"]), float(r["response_time_ms"])) for r in rows]

    async def prune(self, before: datetime) -> int:
        rows = await self._rows("DELETE FROM health_checks WHERE checked_at < :before RETURNING id", {"before": before})
        return len(rows)

    async def close(self) -> None:
        await self.sql.close()
