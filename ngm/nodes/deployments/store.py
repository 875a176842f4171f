"""Agent deployments on gateways, scoped to one organization.

Every change locks what it depends on before checking it: a new deployment locks its gateway (so a gateway
deleted meanwhile is not deployed to, and the gateway's delete sees it), a change locks the deployment.
The lock order is always gateway, then deployment.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ngm.errors import Conflict, NotFound, ValidationFailed
from ngm.models.database import Queries
from ngm.models.query import count, delete, insert, select, select_one, update
from ngm.models.rows import iso, new_ordered_id, utcnow
from ngm.nodes.gateways import store as gateways

TIMES = ("deployed_at", "drain_started_at", "drain_deadline", "created_at", "updated_at")


def view(row: dict[str, Any]) -> dict[str, Any]:
    for key in TIMES:
        row[key] = iso(row.get(key))
    return row


async def get_deployment(q: Queries, organization_id: str, deployment_id: str, *, lock: bool = False) -> dict[str, Any]:
    row = await select_one(q, "GatewayDeployment", {"id": deployment_id, "organization_id": organization_id},
                           lock=lock)
    if row is None:
        raise NotFound(f"deployment {deployment_id} not found", field="deployment_id")
    return view(row)


async def _already_active(q: Queries, organization_id: str, gateway_id: str, agent_id: str, version: str,
                          other_than: str | None = None) -> bool:
    where: dict[str, Any] = {"organization_id": organization_id, "gateway_id": gateway_id, "agent_id": agent_id,
                   "agent_version": version, "is_active": True}
    if other_than:
        where["id"] = ("<>", other_than)
    return bool(await count(q, "GatewayDeployment", where))


async def create_deployment(q: Queries, organization_id: str, fields: dict[str, Any], deployed_by: str
                            ) -> dict[str, Any]:
    try:
        gateway = await gateways.get_gateway(q, organization_id, fields["gateway_id"], lock=True)
    except NotFound:
        raise NotFound(f"gateway {fields['gateway_id']} not found", field="gateway_id") from None
    if await _already_active(q, organization_id, gateway["id"], fields["agent_id"], fields["agent_version"]):
        raise Conflict(f"{fields['agent_id']} {fields['agent_version']} is already deployed on this gateway",
                       field="agent_version", code="already_deployed")
    row = {"id": new_ordered_id(), "organization_id": organization_id, **fields, "is_active": True,
           "status": "active", "deployed_at": utcnow(), "deployed_by": deployed_by}
    await insert(q, "GatewayDeployment", row)
    return await get_deployment(q, organization_id, row["id"])


LIST_ORDER = ("agent_id", "id")


async def list_page(q: Queries, organization_id: str, filters: dict[str, Any], limit: int, offset: int,
                    after: list[Any] | None = None) -> tuple[list[dict[str, Any]], int, list[Any] | None]:
    """(a page of deployments by agent; how many match in all; the keyset of the next page, None on the last)."""
    where = {"organization_id": organization_id, **{k: v for k, v in filters.items() if v is not None}}
    total = await count(q, "GatewayDeployment", where)
    rows = await select(q, "GatewayDeployment", where, order=LIST_ORDER, limit=limit + 1, offset=offset,
                        after=after)  # one more: whether a next page has any row
    next_key = [rows[limit - 1][c] for c in LIST_ORDER] if len(rows) > limit else None
    return [view(r) for r in rows[:limit]], total, next_key


async def _apply(q: Queries, organization_id: str, before: dict[str, Any], changes: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if not changes:
        return before, before
    await update(q, "GatewayDeployment", before["id"], changes)
    return before, await get_deployment(q, organization_id, before["id"])


async def update_deployment(q: Queries, organization_id: str, deployment_id: str, changes: dict[str, Any]
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
    version = changes.get("agent_version")
    if version:  # the version must stay unique among the gateway's active ones: the gateway first
        current = await get_deployment(q, organization_id, deployment_id)
        await gateways.get_gateway(q, organization_id, current["gateway_id"], lock=True)
    before = await get_deployment(q, organization_id, deployment_id, lock=True)
    if (version and version != before["agent_version"] and before["is_active"]
            and await _already_active(q, organization_id, before["gateway_id"], before["agent_id"], version,
                                      other_than=deployment_id)):
        raise Conflict(f"{before['agent_id']} {version} is already deployed on this gateway", field="agent_version",
                       code="already_deployed")
    return await _apply(q, organization_id, before, changes)


async def set_status(q: Queries, organization_id: str, deployment_id: str, status: str
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """active or inactive, at once (draining has its own path)."""
    current = await get_deployment(q, organization_id, deployment_id)
    if status == "active":  # the gateway first (the lock order), then the deployment as locked
        await gateways.get_gateway(q, organization_id, current["gateway_id"], lock=True)
    before = await get_deployment(q, organization_id, deployment_id, lock=True)
    if status == "active" and before["status"] != "active" and await _already_active(
            q, organization_id, before["gateway_id"], before["agent_id"], before["agent_version"],
            other_than=deployment_id):
        raise Conflict("the same agent version is already active on this gateway", field="deployment_id",
                       code="already_deployed")
    return await _apply(q, organization_id, before, {"status": status, "is_active": status != "inactive",
                                                      "drain_started_at": None, "drain_deadline": None})


async def start_drain(q: Queries, organization_id: str, deployment_id: str, timeout_seconds: float
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    before = await get_deployment(q, organization_id, deployment_id, lock=True)
    if before["status"] == "inactive":
        raise ValidationFailed("an inactive deployment has nothing to drain", field="deployment_id")
    if before["status"] == "draining":
        return before, before
    now = utcnow()
    return await _apply(q, organization_id, before, {
        "status": "draining", "drain_started_at": now, "drain_deadline": now + timedelta(seconds=timeout_seconds)})


async def finish_drain(q: Queries, deployment_id: str) -> bool:
    """Draining -> inactive, if it is still draining (an operator may have changed it meanwhile)."""
    row = await select_one(q, "GatewayDeployment", {"id": deployment_id}, lock=True)
    if row is None or row["status"] != "draining":
        return False
    await update(q, "GatewayDeployment", deployment_id, {"status": "inactive", "is_active": False})
    return True


async def delete_deployment(q: Queries, organization_id: str, deployment_id: str) -> dict[str, Any]:
    row = await get_deployment(q, organization_id, deployment_id, lock=True)
    await delete(q, "GatewayDeployment", {"id": deployment_id})
    return row
