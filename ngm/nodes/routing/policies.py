"""Routing policies per agent and environment (db.express: management path)."""

from __future__ import annotations

from ngm.errors import NotFound
from ngm.models.rows import new_id, normalize

DEFAULT = {"strategy": "weighted", "sticky": False, "sticky_header": "X-Routing-Key", "fallback": "any_region",
           "fallback_regions": []}


def view(row: dict) -> dict:
    return normalize(row, bools=("sticky",)) | {"default": False}


async def find(db, organization_id: str, agent_id: str, environment: str) -> dict | None:
    rows = await db.express.list("RoutingPolicy", filter={"organization_id": organization_id, "agent_id": agent_id,
                                                          "environment": environment}, limit=1)
    return view(rows[0]) if rows else None


async def effective(db, organization_id: str, agent_id: str, environment: str) -> dict:
    found = await find(db, organization_id, agent_id, environment)
    return found or {"organization_id": organization_id, "agent_id": agent_id, "environment": environment,
                     **DEFAULT, "id": None, "default": True}


async def put(db, organization_id: str, agent_id: str, environment: str, fields: dict) -> tuple[dict | None, dict]:
    before = await find(db, organization_id, agent_id, environment)
    if before is None:
        row = {"id": new_id(), "organization_id": organization_id, "agent_id": agent_id,
               "environment": environment, **DEFAULT, **fields}
        await db.express.create("RoutingPolicy", row)
    else:
        changes = {k: v for k, v in fields.items() if before.get(k) != v}
        if changes:
            await db.express.update("RoutingPolicy", before["id"], changes)
    return before, await find(db, organization_id, agent_id, environment)


async def list_all(db, organization_id: str, agent_id: str | None) -> list[dict]:
    where = {"organization_id": organization_id}
    if agent_id:
        where["agent_id"] = agent_id
    rows = await db.express.list("RoutingPolicy", filter=where, order_by=["agent_id", "environment"], limit=10_000)
    return [view(r) for r in rows]


async def remove(db, organization_id: str, agent_id: str, environment: str) -> dict:
    found = await find(db, organization_id, agent_id, environment)
    if found is None:
        raise NotFound(f"no routing policy for {agent_id} in {environment}", field="agent_id")
    await db.express.delete("RoutingPolicy", found["id"])
    return found
