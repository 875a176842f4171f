"""Agent deployments on gateways, scoped to one organization (db.express: management path)."""

from __future__ import annotations

from datetime import timedelta

from ngm.errors import Conflict, NotFound, ValidationFailed
from ngm.models.rows import new_ordered_id, normalize, utcnow
from ngm.nodes.gateways import store as gateways

TIMES = ("deployed_at", "drain_started_at", "drain_deadline")


def view(row: dict) -> dict:
    return normalize(row, bools=("is_active",), times=TIMES)


async def fetch(db, organization_id: str, deployment_id: str) -> dict:
    rows = await db.express.list("GatewayDeployment", filter={"id": deployment_id,
                                                              "organization_id": organization_id}, limit=1)
    if not rows:
        raise NotFound(f"deployment {deployment_id} not found", field="deployment_id")
    return view(rows[0])


async def create(db, organization_id: str, fields: dict, deployed_by: str) -> dict:
    try:
        gateway = await gateways.fetch(db, organization_id, fields["gateway_id"])
    except NotFound:
        raise NotFound(f"gateway {fields['gateway_id']} not found", field="gateway_id") from None
    clash = await db.express.count("GatewayDeployment", filter={
        "organization_id": organization_id, "gateway_id": gateway["id"], "agent_id": fields["agent_id"],
        "agent_version": fields["agent_version"], "is_active": True})
    if clash:
        raise Conflict(f"{fields['agent_id']} {fields['agent_version']} is already deployed on this gateway",
                       field="agent_version", code="already_deployed")
    row = {"id": new_ordered_id(), "organization_id": organization_id, **fields, "is_active": True,
           "status": "active", "deployed_at": utcnow(), "deployed_by": deployed_by}
    await db.express.create("GatewayDeployment", row)
    return await fetch(db, organization_id, row["id"])


async def list_page(db, organization_id: str, filters: dict, limit: int, offset: int) -> tuple[list[dict], int]:
    where = {"organization_id": organization_id, **{k: v for k, v in filters.items() if v is not None}}
    total = await db.express.count("GatewayDeployment", filter=where)
    rows = await db.express.list("GatewayDeployment", filter=where, order_by=["agent_id", "id"], limit=limit,
                                 offset=offset)
    return [view(r) for r in rows], total


async def patch(db, organization_id: str, deployment_id: str, changes: dict) -> tuple[dict, dict]:
    before = await fetch(db, organization_id, deployment_id)
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if not changes:
        return before, before
    return before, view(await db.express.update("GatewayDeployment", deployment_id, changes))


async def set_status(db, organization_id: str, deployment_id: str, status: str) -> tuple[dict, dict]:
    """active or inactive, at once (draining has its own path)."""
    before = await fetch(db, organization_id, deployment_id)
    if status == "active" and before["status"] != "active":
        gateway_rows = await db.express.list("GatewayDeployment", filter={
            "organization_id": organization_id, "gateway_id": before["gateway_id"], "agent_id": before["agent_id"],
            "agent_version": before["agent_version"], "is_active": True}, limit=1)
        if gateway_rows:
            raise Conflict("the same agent version is already active on this gateway", field="deployment_id",
                           code="already_deployed")
    changes = {"status": status, "is_active": status != "inactive", "drain_started_at": None, "drain_deadline": None}
    return await patch(db, organization_id, deployment_id, changes)


async def start_drain(db, organization_id: str, deployment_id: str, timeout_seconds: float) -> tuple[dict, dict]:
    before = await fetch(db, organization_id, deployment_id)
    if before["status"] == "inactive":
        raise ValidationFailed("an inactive deployment has nothing to drain", field="deployment_id")
    if before["status"] == "draining":
        return before, before
    now = utcnow()
    return await patch(db, organization_id, deployment_id, {
        "status": "draining", "drain_started_at": now, "drain_deadline": now + timedelta(seconds=timeout_seconds)})


async def remove(db, organization_id: str, deployment_id: str) -> dict:
    row = await fetch(db, organization_id, deployment_id)
    await db.express.delete("GatewayDeployment", deployment_id)
    return row
