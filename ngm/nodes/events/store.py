"""Health transitions and webhooks in the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ngm.errors import NotFound
from ngm.models.database import Queries, Transaction
from ngm.models.query import chunks, delete, insert, insert_many, select, select_one, update
from ngm.models.rows import iso, new_id, new_ordered_id, utcnow
from ngm.nodes.events.bus import HEALTH_TRANSITION
from ngm.nodes.events.signing import new_secret

if TYPE_CHECKING:
    from ngm.nodes.events.bus import LocalBus
    from ngm.nodes.secrets.keyring import Keyring

WEBHOOK_EVENT_TYPES = (HEALTH_TRANSITION,)


def make_event(event_type: str, organization_id: str, data: dict[str, Any], *, event_id: str | None = None,
               occurred_at: datetime | None = None) -> dict[str, Any]:
    return {"id": event_id or new_id(), "type": event_type, "organization_id": organization_id,
            "occurred_at": iso(occurred_at or utcnow()), "data": data}


def transition_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("created_at", "updated_at")}
    out["occurred_at"] = iso(out["occurred_at"])
    return out


async def record_transitions(q: Queries, bus: LocalBus, transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store transitions and queue their webhook deliveries (in the caller's transaction), and publish them
    once it commits; a few batched statements however many there are (a restart can move hundreds of
    gateways at once). transition: organization_id, gateway_id, gateway_name, from/to health and status,
    reason, occurred_at."""
    if not transitions:
        return []
    rows = [{"id": new_ordered_id(), **t} for t in transitions]
    await insert_many(q, "HealthEvent", rows)
    events = [make_event(HEALTH_TRANSITION, r["organization_id"], transition_view(r) | {"id": r["id"]},
                         event_id=r["id"], occurred_at=r["occurred_at"]) for r in rows]
    await _queue_deliveries(q, events)

    async def publish() -> None:
        await bus.publish_many(events)

    if isinstance(q, Transaction):
        q.after_commit(publish)
    else:
        await publish()
    return events


async def _queue_deliveries(q: Queries, events: list[dict[str, Any]]) -> None:
    orgs = sorted({e["organization_id"] for e in events})
    hooks = []
    for part in chunks(orgs):
        hooks += await select(q, "Webhook", {"active": True, "organization_id": ("in", part)})
    now = utcnow()
    deliveries = [{"id": new_ordered_id(), "organization_id": e["organization_id"], "webhook_id": h["id"],
                   "event_id": e["id"], "event_type": e["type"], "payload": e, "status": "pending", "attempts": 0,
                   "next_attempt_at": now}
                  for e in events for h in hooks
                  if h["organization_id"] == e["organization_id"] and e["type"] in (h["events"] or [])]
    await insert_many(q, "WebhookDelivery", deliveries)


async def enqueue_test(q: Queries, event: dict[str, Any], webhook_id: str) -> None:
    """A single delivery to one webhook, whatever it subscribes to (POST /webhooks/{id}/test)."""
    await insert(q, "WebhookDelivery", {
        "id": new_ordered_id(), "organization_id": event["organization_id"], "webhook_id": webhook_id,
        "event_id": event["id"], "event_type": event["type"], "payload": event, "status": "pending",
        "attempts": 0, "next_attempt_at": utcnow()})


async def list_transitions(q: Queries, organization_id: str, gateway_id: str | None, since: datetime | None,
                           limit: int) -> list[dict[str, Any]]:
    where: dict[str, Any] = {"organization_id": organization_id}
    if gateway_id:
        where["gateway_id"] = gateway_id
    if since:
        where["occurred_at"] = (">=", since)
    rows = await select(q, "HealthEvent", where, order=["-occurred_at", "-id"], limit=limit)
    items = [transition_view(r) | {"deliveries": []} for r in rows]
    by_event = {item["id"]: item for item in items}
    for part in chunks(list(by_event)):  # the alerts each transition sent (a transition's id is its event id)
        sent = await select(q, "WebhookDelivery", {"organization_id": organization_id, "event_id": ("in", part)},
                            order=["id"])
        for row in sent:
            view = delivery_view(row)
            by_event[row["event_id"]]["deliveries"].append(
                {k: view[k] for k in ("webhook_id", "status", "attempts", "last_status_code", "delivered_at")})
    return items


# ---------------------------------------------------------------- webhooks

def webhook_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "secret_encrypted"}
    for key in ("created_at", "updated_at"):
        out[key] = iso(out.get(key))
    return out


async def create_webhook(q: Queries, keyring: Keyring, organization_id: str, fields: dict[str, Any], actor: str
                         ) -> tuple[dict[str, Any], str]:
    secret = new_secret()
    row = {"id": "wh_" + new_id()[:16], "organization_id": organization_id, "url": fields["url"],
           "description": fields.get("description"), "events": list(fields.get("events") or WEBHOOK_EVENT_TYPES),
           "active": fields.get("active", True), "secret_encrypted": keyring.encrypt(secret), "created_by": actor}
    await insert(q, "Webhook", row)
    return await get_webhook(q, organization_id, row["id"]), secret


async def get_webhook_row(q: Queries, organization_id: str, webhook_id: str, *, lock: bool = False) -> dict[str, Any]:
    row = await select_one(q, "Webhook", {"id": webhook_id, "organization_id": organization_id}, lock=lock)
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found", field="webhook_id")
    return row


async def get_webhook(q: Queries, organization_id: str, webhook_id: str, *, lock: bool = False) -> dict[str, Any]:
    return webhook_view(await get_webhook_row(q, organization_id, webhook_id, lock=lock))


async def list_webhooks(q: Queries, organization_id: str) -> list[dict[str, Any]]:
    rows = await select(q, "Webhook", {"organization_id": organization_id}, order=["created_at", "id"], limit=1000)
    return [webhook_view(r) for r in rows]


async def update_webhook(q: Queries, organization_id: str, webhook_id: str, changes: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    before = await get_webhook(q, organization_id, webhook_id, lock=True)
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if not changes:
        return before, before
    await update(q, "Webhook", webhook_id, changes)
    return before, await get_webhook(q, organization_id, webhook_id)


async def rotate_secret(q: Queries, keyring: Keyring, organization_id: str, webhook_id: str
                        ) -> tuple[dict[str, Any], str]:
    await get_webhook_row(q, organization_id, webhook_id, lock=True)
    secret = new_secret()
    await update(q, "Webhook", webhook_id, {"secret_encrypted": keyring.encrypt(secret)})
    return await get_webhook(q, organization_id, webhook_id), secret


async def delete_webhook(q: Queries, organization_id: str, webhook_id: str) -> dict[str, Any]:
    hook = await get_webhook(q, organization_id, webhook_id, lock=True)
    await delete(q, "WebhookDelivery", {"webhook_id": webhook_id})
    await delete(q, "Webhook", {"id": webhook_id})
    return hook


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("payload", "updated_at")}
    for key in ("next_attempt_at", "delivered_at", "created_at"):
        out[key] = iso(out.get(key))
    return out


async def list_deliveries(q: Queries, organization_id: str, webhook_id: str, status: str | None,
                          limit: int) -> list[dict[str, Any]]:
    await get_webhook_row(q, organization_id, webhook_id)
    where: dict[str, Any] = {"webhook_id": webhook_id, "organization_id": organization_id}
    if status:
        where["status"] = status
    rows = await select(q, "WebhookDelivery", where, order=["-id"], limit=limit)
    return [delivery_view(r) for r in rows]


async def due_deliveries(q: Queries, now: datetime, limit: int) -> list[dict[str, Any]]:
    return await select(q, "WebhookDelivery", {"status": "pending", "next_attempt_at": ("<=", now)},
                        order=["id"], limit=limit)  # creation order: events reach each webhook in order


def retry_at(now: datetime, delay_seconds: float) -> datetime:
    return now + timedelta(seconds=delay_seconds)
