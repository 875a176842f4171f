"""Routing policies per agent and environment."""

from __future__ import annotations

from ngm.errors import Conflict, NotFound
from ngm.models.database import Queries, TransactionConflict
from ngm.models.query import delete, insert, select, select_one, update
from ngm.models.rows import new_id

DEFAULT = {"strategy": "weighted", "sticky": False, "sticky_header": "X-Routing-Key", "fallback": "any_region",
           "fallback_regions": []}


def view(row: dict) -> dict:
    row.pop("created_at", None)
    row.pop("updated_at", None)
    return row | {"default": False}


async def find(q: Queries, organization_id: str, agent_id: str, environment: str, *, lock: bool = False
               ) -> dict | None:
    row = await select_one(q, "RoutingPolicy", {"organization_id": organization_id, "agent_id": agent_id,
                                                "environment": environment}, lock=lock)
    return view(row) if row else None


async def effective(q: Queries, organization_id: str, agent_id: str, environment: str) -> dict:
    found = await find(q, organization_id, agent_id, environment)
    return found or {"organization_id": organization_id, "agent_id": agent_id, "environment": environment,
                     **DEFAULT, "id": None, "default": True}


async def put(q: Queries, organization_id: str, agent_id: str, environment: str, fields: dict
              ) -> tuple[dict | None, dict]:
    before = await find(q, organization_id, agent_id, environment, lock=True)
    if before is None:
        row = {"id": new_id(), "organization_id": organization_id, "agent_id": agent_id,
               "environment": environment, **DEFAULT, **fields}
        try:
            await insert(q, "RoutingPolicy", row)
        except Conflict:  # another request created it since: run again, as an update of theirs
            raise TransactionConflict("routing policy created concurrently") from None
    else:
        changes = {k: v for k, v in fields.items() if before.get(k) != v}
        if changes:
            await update(q, "RoutingPolicy", before["id"], changes)
    after = await find(q, organization_id, agent_id, environment)
    assert after is not None  # written above, in this transaction
    return before, after


async def list_all(q: Queries, organization_id: str, agent_id: str | None) -> list[dict]:
    where = {"organization_id": organization_id}
    if agent_id:
        where["agent_id"] = agent_id
    rows = await select(q, "RoutingPolicy", where, order=["agent_id", "environment"], limit=10_000)
    return [view(r) for r in rows]


async def remove(q: Queries, organization_id: str, agent_id: str, environment: str) -> dict:
    found = await find(q, organization_id, agent_id, environment, lock=True)
    if found is None:
        raise NotFound(f"no routing policy for {agent_id} in {environment}", field="agent_id")
    await delete(q, "RoutingPolicy", {"id": found["id"]})
    return found
