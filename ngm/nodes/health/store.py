"""Health data in bulk, through Kailash's AsyncSQLDatabaseNode on the tables DataFlow declares.

Why not db.express here: the monitor writes one gateway row and one history row per probe. Measured on
this machine for 1,000 gateways: express.update costs 10 ms a row on SQLite (5.4 ms on PostgreSQL), so
10 s a sweep; one batched UPDATE through execute_many_async takes 15 ms (38 ms). Reads for the monitor
and for history statistics are likewise 13 ms for 1,000 rows against 87 ms through express.list.
"""

from __future__ import annotations

import json
from datetime import datetime

from ngm.models.rows import iso, parse_time

_MONITOR_COLUMNS = (
    "id, organization_id, name, api_url, api_port, health_check_url, api_key_encrypted, status, health_status, "
    "health_check_interval, health_check_timeout, healthy_threshold, unhealthy_threshold, degraded_latency_ms, "
    "health_grace_period, health_successes, health_failures, health_slow, health_fast, last_health_check, "
    "created_at"
)


def _json_list(value) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return list(value or [])


class HealthStore:
    def __init__(self, database_url: str):
        from kailash.nodes.data.async_sql import AsyncSQLDatabaseNode

        self.postgres = database_url.startswith(("postgresql://", "postgres://"))
        self._node = AsyncSQLDatabaseNode(connection_string=database_url,
                                          database_type="postgresql" if self.postgres else "sqlite")
        self._jsonb = "CAST(:wf AS JSONB)" if self.postgres else ":wf"

    async def _rows(self, query: str, params: dict | None = None) -> list[dict]:
        result = await self._node.async_run(query=query, params=params or {}, fetch_mode="all")
        return result["result"]["data"] or []

    async def _many(self, query: str, params: list[dict]) -> None:
        """One statement, many parameter sets, one transaction. Reports no row count (the adapters do not),
        and PostgreSQL's adapter renames :name by plain text replacement: no parameter name may start
        another's."""
        if params:
            await self._node.execute_many_async(query=query, params_list=params)

    async def monitored_gateways(self) -> list[dict]:
        """Every gateway the monitor probes: all but the inactive ones."""
        rows = await self._rows(f"SELECT {_MONITOR_COLUMNS} FROM gateways WHERE status <> 'inactive'")
        for row in rows:
            row["last_health_check"] = parse_time(row["last_health_check"])
            row["created_at"] = parse_time(row["created_at"])
        return rows

    async def gateway_status(self, gateway_id: str) -> str | None:
        rows = await self._rows("SELECT status FROM gateways WHERE id = :id", {"id": gateway_id})
        return rows[0]["status"] if rows else None

    async def set_status_if(self, gateway_id: str, expected: str, new: str) -> bool:
        """Compare-and-set of the administrative status, so an operator's change is never overwritten."""
        rows = await self._rows("UPDATE gateways SET status = :new WHERE id = :id AND status = :expected RETURNING id",
                                {"id": gateway_id, "expected": expected, "new": new})
        return len(rows) == 1

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
            row["unhealthy_workflows"] = _json_list(row["unhealthy_workflows"])
        return rows

    async def samples(self, gateway_id: str, since: datetime) -> list[tuple[bool, float]]:
        rows = await self._rows("SELECT ok, response_time_ms FROM health_checks WHERE gateway_id = :g AND "
                                "checked_at >= :since", {"g": gateway_id, "since": since})
        return [(bool(r["ok"]), float(r["response_time_ms"])) for r in rows]

    async def prune(self, before: datetime) -> int:
        rows = await self._rows("DELETE FROM health_checks WHERE checked_at < :before RETURNING id", {"before": before})
        return len(rows)

    async def close(self) -> None:
        cleanup = getattr(self._node, "cleanup", None)
        if cleanup is not None:
            await cleanup()
