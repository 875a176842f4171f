"""RecordAuditNode: writes one audit event for a change another node describes."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.rows import new_id, utcnow
from ngm.nodes.base import REQUIRED, ContextNode


async def record_event(db, organization_id: str, actor: dict, action: str, entry: dict) -> str:
    event_id = new_id()
    await db.express.create("AuditEvent", {
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
        event_id = await record_event(self.ctx.db, kw["organization_id"], kw["actor"], kw["action"], kw["entry"])
        return {"event_id": event_id}
