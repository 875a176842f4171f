"""Gateway records, always scoped to one organization.

A change locks the row it starts from (`lock=True`: SELECT ... FOR UPDATE on PostgreSQL; SQLite's write
transaction holds the database), so the audit record built from (before, after) says exactly what this
request changed, and checks such as "no active deployments" hold until the transaction commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ngm.errors import Conflict, NotFound, ValidationFailed
from ngm.models.database import Queries
from ngm.models.json_rows import JsonText, JsonView, page_json, select_json
from ngm.models.query import count, delete, insert, select, select_one, update
from ngm.models.rows import iso, new_id
from ngm.nodes.gateways.validation import base_url, consistency_errors, same_origin

if TYPE_CHECKING:
    from ngm.nodes.secrets.keyring import Keyring

TIME_FIELDS = ("last_health_check", "created_at", "updated_at")
SECRET_FIELDS = ("api_key_encrypted", "api_key_last4")
INTERNAL_FIELDS = ("health_successes", "health_failures", "health_slow", "health_fast")  # hysteresis counters
HEALTH_RANK: dict[str | None, int] = {"healthy": 0, "degraded": 1, "unknown": 2, "unhealthy": 3}
_HIDDEN = frozenset(SECRET_FIELDS + INTERNAL_FIELDS)
FLOAT_FIELDS = ("last_response_time_ms", "health_check_interval", "health_check_timeout", "degraded_latency_ms",
                "health_grace_period", "request_timeout", "rate_limit_window")


def canonical(row: dict[str, Any]) -> dict[str, Any]:
    """A row as every caller sees it: times in ISO 8601, floats rounded (PostgreSQL REAL is 4 bytes: 6.89
    comes back as 6.8899998)."""
    for key in TIME_FIELDS:
        row[key] = iso(row.get(key))
    for key in FLOAT_FIELDS:
        if row.get(key) is not None:
            row[key] = round(float(row[key]), 3)
    return row


_KEY_SET = "coalesce(api_key_encrypted, '') <> ''"
_LAST4 = f"CASE WHEN {_KEY_SET} THEN api_key_last4 END"
# public_view, rendered by the database: the gateway list and get
PUBLIC = JsonView("Gateway", hidden=_HIDDEN, extra={
    "api_key_set": {"sqlite": f"json(CASE WHEN {_KEY_SET} THEN 'true' ELSE 'false' END)", "postgresql": _KEY_SET},
    "api_key_last4": {"sqlite": _LAST4, "postgresql": _LAST4}})


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    """What callers see: never the encrypted key, only whether one is set and its last 4 characters."""
    out = {k: v for k, v in row.items() if k not in _HIDDEN}
    out["api_key_set"] = bool(row.get("api_key_encrypted"))
    out["api_key_last4"] = row.get("api_key_last4") if out["api_key_set"] else None
    return out


def _check_consistency(record: dict[str, Any]) -> None:
    errors = consistency_errors(record)
    if errors:
        raise ValidationFailed.from_fields(errors)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a gateway named {name!r} already exists in this organization", field="name",
                    code="name_taken")


async def _name_free(q: Queries, organization_id: str, name: str, other_than: str | None = None) -> None:
    where: dict[str, Any] = {"organization_id": organization_id, "name": name}
    if other_than:
        where["id"] = ("<>", other_than)
    if await count(q, "Gateway", where):
        raise _name_taken(name)


async def create_gateway(q: Queries, organization_id: str, record: dict[str, Any]) -> dict[str, Any]:
    record = {**record, "id": new_id(), "organization_id": organization_id}
    if record.get("ssl_enabled") is None:
        record["ssl_enabled"] = record["api_url"].lower().startswith("https://")
    _check_consistency(record)
    await _name_free(q, organization_id, record["name"])
    try:
        await insert(q, "Gateway", record)
    except Conflict:  # the unique index: another request took the name since the check
        raise _name_taken(record["name"]) from None
    return await get_gateway(q, organization_id, record["id"])


async def get_gateway(q: Queries, organization_id: str, gateway_id: str, *, lock: bool = False) -> dict[str, Any]:
    row = await select_one(q, "Gateway", {"id": gateway_id, "organization_id": organization_id}, lock=lock)
    if row is None:
        raise NotFound(f"gateway {gateway_id} not found", field="gateway_id")
    return canonical(row)


async def get_public(q: Queries, organization_id: str, gateway_id: str) -> dict[str, Any]:
    """A gateway as callers see it (public_view of the row)."""
    found = await select_json(q, PUBLIC, {"id": gateway_id, "organization_id": organization_id}, limit=1)
    if not found:
        raise NotFound(f"gateway {gateway_id} not found", field="gateway_id")
    return found[0]


LIST_ORDER = ("name", "id")


async def list_public_page(q: Queries, organization_id: str, filters: dict[str, Any], limit: int, offset: int,
                           after: list[Any] | None = None) -> tuple[JsonText, int, list[Any] | None]:
    """(a page of gateways as callers see them, by name; how many match in all; the keyset of the next page)."""
    where = {"organization_id": organization_id, **{k: v for k, v in filters.items() if v is not None}}
    return await page_json(q, PUBLIC, where, order=LIST_ORDER, limit=limit, offset=offset, after=after)


async def update_gateway(q: Queries, organization_id: str, gateway_id: str, changes: dict[str, Any],
                         keyring: Keyring | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a partial update to the row as locked; returns (before, after). A key sealed before the lock was
    taken is sealed again (keyring) under the newest key: a rotation may have pruned the old one meanwhile."""
    before = await get_gateway(q, organization_id, gateway_id, lock=True)
    if keyring is not None and changes.get("api_key_encrypted"):
        changes = {**changes, "api_key_encrypted": keyring.seal_again(changes["api_key_encrypted"])}
    merged = {**before, **changes}
    _check_consistency(merged)
    if ("api_key_encrypted" not in changes and before.get("api_key_encrypted")
            and not same_origin(base_url(before), base_url(merged))):  # api_url and api_port alike
        raise ValidationFailed.from_fields([{"field": "api_key", "message": (
            "is required when the gateway moves to another origin (api_url or api_port: scheme, host or port): "
            "the stored key is not sent to a new host. Send the gateway's key for it in the same request (CLI: "
            "--gateway-api-key -), or clear it (api_key: null; CLI: --clear api_key)")}])
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if not changes:
        return before, before
    if "name" in changes:
        await _name_free(q, organization_id, changes["name"], other_than=gateway_id)
    try:
        await update(q, "Gateway", gateway_id, changes)
    except Conflict:
        raise _name_taken(changes.get("name", before["name"])) from None
    return before, await get_gateway(q, organization_id, gateway_id)


async def count_active_deployments(q: Queries, organization_id: str, gateway_id: str) -> int:
    return await count(q, "GatewayDeployment",
                       {"organization_id": organization_id, "gateway_id": gateway_id, "is_active": True})


async def delete_gateway(q: Queries, organization_id: str, gateway_id: str, force: bool) -> dict[str, Any]:
    """Delete the locked gateway: refused while it has active deployments (a deployment created meanwhile
    waited for the lock and finds it gone), or with them when forced."""
    gateway = await get_gateway(q, organization_id, gateway_id, lock=True)
    active = await count_active_deployments(q, organization_id, gateway_id)
    if active and not force:
        raise Conflict(
            f"gateway {gateway_id} still has {active} active deployment(s); drain or delete them, "
            "or delete with force",
            code="active_deployments",
            details={"active_deployments": active, "gateway_id": gateway_id},
        )
    deleted = await delete(q, "GatewayDeployment", {"organization_id": organization_id, "gateway_id": gateway_id})
    await delete(q, "Gateway", {"id": gateway_id})
    return {**gateway, "deleted_deployments": deleted}


async def resolve(q: Queries, organization_id: str, environment: str) -> dict[str, Any]:
    """The first active gateway of an environment: healthiest first, then oldest."""
    rows = await select(q, "Gateway", {"organization_id": organization_id, "environment": environment,
                                       "status": "active"}, order=["created_at", "id"])
    if not rows:
        raise NotFound(f"no active gateway in environment {environment}", field="environment",
                       code="no_active_gateway")
    best = min(rows, key=lambda r: HEALTH_RANK.get(r.get("health_status"), 2))  # min() keeps the first of equals
    return canonical(best)
