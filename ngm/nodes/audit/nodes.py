"""RecordAuditNode: writes one audit event for a change another node describes, in the same transaction."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.database import Queries
from ngm.models.query import count, insert, select
from ngm.models.rows import iso, new_ordered_id, utcnow
from ngm.nodes.base import REQUIRED, ContextNode


async def record_event(q: Queries, organization_id: str, actor: dict, action: str, entry: dict) -> str:
    """The id sorts in the order the changes were made (each inside its transaction, after its locks)."""
    event_id = new_ordered_id()
    await insert(q, "AuditEvent", {
        "id": event_id, "organization_id": organization_id,
        "actor_id": actor.get("id", ""), "actor_name": actor.get("name", ""),
        "action": action, "resource_type": entry["resource_type"], "resource_id": entry["resource_id"],
        "changes": entry.get("changes", {}), "occurred_at": utcnow(),
    })
    return event_id


@register_node()
class RecordAuditNode(ContextNode):
    """Config: action (e.g. "gateway.update"). Input `entry`: {resource_type, resource_id, changes}."""

    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "entry": (dict, REQUIRED),
              "action": (str, REQUIRED)}

    async def async_run(self, **kw):
        if not kw["entry"].get("changes"):  # an update that changed nothing is not an event
            return {"event_id": None}
        event_id = await record_event(self.db, kw["organization_id"], kw["actor"], kw["action"], kw["entry"])
        return {"event_id": event_id}


def event_view(row: dict) -> dict:
    row["occurred_at"] = iso(row["occurred_at"])
    row.pop("updated_at", None)
    row.pop("created_at", None)
    return row


@register_node()
class ListAuditEventsNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        where = {"organization_id": kw["organization_id"],
                 **{k: p[k] for k in ("resource_type", "resource_id", "action") if p.get(k)}}
        total = await count(self.db, "AuditEvent", where)
        rows = await select(self.db, "AuditEvent", where, order=["-occurred_at", "-id"], limit=p["limit"],
                            offset=p["offset"])
        return {"page": {"items": [event_view(r) for r in rows], "total": total, "limit": p["limit"],
                         "offset": p["offset"]}}
