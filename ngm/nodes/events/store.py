"""Health transitions and webhooks in the database (low volume: db.express is fine here)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from ngm.errors import NotFound
from ngm.models.rows import iso, new_id, new_ordered_id, normalize, utcnow
from ngm.models.sql import chunks, in_list, json_list
from ngm.nodes.events.signing import new_secret

WEBHOOK_EVENT_TYPES = ("health.transition",)


def make_event(event_type: str, organization_id: str, data: dict, *, event_id: str | None = None,
               occurred_at: datetime | None = None) -> dict:
    return {"id": event_id or new_id(), "type": event_type, "organization_id": organization_id,
            "occurred_at": iso(occurred_at or utcnow()), "data": data}


def transition_view(row: dict) -> dict:
    out = normalize(row, times=("occurred_at",))
    out.pop("created_at", None)
    out.pop("updated_at", None)
    return out


_EVENT_COLUMNS = ("id", "organization_id", "gateway_id", "gateway_name", "occurred_at", "from_health", "to_health",
                  "from_status", "to_status", "reason")


async def record_transitions(sql, bus, transitions: list[dict]) -> list[dict]:
    """Store transitions, queue their webhook deliveries and publish them, in a few batched statements
    (a restart can move hundreds of gateways at once). transition: organization_id, gateway_id,
    gateway_name, from/to health and status, reason, occurred_at."""
    if not transitions:
        return []
    rows = [{"id": new_ordered_id(), **t} for t in transitions]
    await sql.many(f"INSERT INTO health_events ({', '.join(_EVENT_COLUMNS)}) VALUES "
                   f"({', '.join(':' + c for c in _EVENT_COLUMNS)})", rows)
    events = [make_event("health.transition", r["organization_id"], transition_view(r) | {"id": r["id"]},
                         event_id=r["id"], occurred_at=r["occurred_at"]) for r in rows]
    await _queue_deliveries(sql, events)
    for event in events:
        await bus.publish(event)
    return events


async def _queue_deliveries(sql, events: list[dict]) -> None:
    orgs = sorted({e["organization_id"] for e in events})
    hooks = []
    for part in chunks(orgs):
        clause, params = in_list(part, "o")
        hooks += await sql.rows(f"SELECT id, organization_id, events FROM webhooks WHERE active = :yes AND "
                                f"organization_id IN {clause}", {"yes": True, **params})
    now = utcnow()
    deliveries = [{"id": new_ordered_id(), "organization_id": e["organization_id"], "webhook_id": h["id"],
                   "event_id": e["id"], "event_type": e["type"], "payload": json.dumps(e), "now": now}
                  for e in events for h in hooks
                  if h["organization_id"] == e["organization_id"] and e["type"] in json_list(h["events"])]
    await sql.many("INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, payload, "
                   "status, attempts, next_attempt_at) VALUES (:id, :organization_id, :webhook_id, :event_id, "
                   f":event_type, {sql.json('payload')}, 'pending', 0, :now)", deliveries)


async def enqueue_test(db, event: dict, webhook_id: str) -> None:
    """A single delivery to one webhook, whatever it subscribes to (POST /webhooks/{id}/test)."""
    await db.express.create("WebhookDelivery", {
        "id": new_ordered_id(), "organization_id": event["organization_id"], "webhook_id": webhook_id,
        "event_id": event["id"], "event_type": event["type"], "payload": event, "status": "pending",
        "attempts": 0, "next_attempt_at": utcnow()})


async def list_transitions(db, organization_id: str, gateway_id: str | None, since: datetime | None,
                           limit: int) -> list[dict]:
    where: dict = {"organization_id": organization_id}
    if gateway_id:
        where["gateway_id"] = gateway_id
    if since:
        where["occurred_at"] = {"$gte": since}
    rows = await db.express.list("HealthEvent", filter=where, order_by=["-occurred_at", "-id"], limit=limit)
    items = [transition_view(r) | {"deliveries": []} for r in rows]
    by_event = {item["id"]: item for item in items}
    for part in chunks(list(by_event)):  # the alerts each transition sent (a transition's id is its event id)
        sent = await db.express.list("WebhookDelivery", filter={"organization_id": organization_id,
                                                                "event_id": {"$in": part}}, order_by=["id"])
        for row in sent:
            view = delivery_view(row)
            by_event[row["event_id"]]["deliveries"].append(
                {k: view[k] for k in ("webhook_id", "status", "attempts", "last_status_code", "delivered_at")})
    return items


# ---------------------------------------------------------------- webhooks

def webhook_view(row: dict) -> dict:
    out = normalize(row, bools=("active",))
    out.pop("secret_encrypted", None)
    return out


async def create_webhook(db, keyring, organization_id: str, fields: dict, actor: str) -> tuple[dict, str]:
    secret = new_secret()
    row = {"id": "wh_" + new_id()[:16], "organization_id": organization_id, "url": fields["url"],
           "description": fields.get("description"), "events": list(fields.get("events") or WEBHOOK_EVENT_TYPES),
           "active": fields.get("active", True), "secret_encrypted": keyring.encrypt(secret), "created_by": actor}
    await db.express.create("Webhook", row)
    return await fetch_webhook(db, organization_id, row["id"]), secret


async def fetch_webhook_row(db, organization_id: str, webhook_id: str) -> dict:
    rows = await db.express.list("Webhook", filter={"id": webhook_id, "organization_id": organization_id}, limit=1)
    if not rows:
        raise NotFound(f"webhook {webhook_id} not found", field="webhook_id")
    return rows[0]


async def fetch_webhook(db, organization_id: str, webhook_id: str) -> dict:
    return webhook_view(await fetch_webhook_row(db, organization_id, webhook_id))


async def list_webhooks(db, organization_id: str) -> list[dict]:
    rows = await db.express.list("Webhook", filter={"organization_id": organization_id},
                                 order_by=["created_at", "id"], limit=1000)
    return [webhook_view(r) for r in rows]


async def update_webhook(db, organization_id: str, webhook_id: str, changes: dict) -> tuple[dict, dict]:
    before = await fetch_webhook(db, organization_id, webhook_id)
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if not changes:
        return before, before
    await db.express.update("Webhook", webhook_id, changes)
    return before, await fetch_webhook(db, organization_id, webhook_id)


async def rotate_secret(db, keyring, organization_id: str, webhook_id: str) -> tuple[dict, str]:
    await fetch_webhook_row(db, organization_id, webhook_id)
    secret = new_secret()
    await db.express.update("Webhook", webhook_id, {"secret_encrypted": keyring.encrypt(secret)})
    return await fetch_webhook(db, organization_id, webhook_id), secret


async def delete_webhook(db, organization_id: str, webhook_id: str) -> dict:
    hook = await fetch_webhook(db, organization_id, webhook_id)
    deliveries = await db.express.list("WebhookDelivery", filter={"webhook_id": webhook_id}, limit=100_000)
    if deliveries:
        await db.express.bulk_delete("WebhookDelivery", [d["id"] for d in deliveries])
    await db.express.delete("Webhook", webhook_id)
    return hook


def delivery_view(row: dict) -> dict:
    out = normalize(row, times=("next_attempt_at", "delivered_at"))
    out.pop("payload", None)
    out.pop("updated_at", None)
    return out


async def list_deliveries(db, organization_id: str, webhook_id: str, status: str | None, limit: int) -> list[dict]:
    await fetch_webhook_row(db, organization_id, webhook_id)
    where = {"webhook_id": webhook_id, "organization_id": organization_id}
    if status:
        where["status"] = status
    rows = await db.express.list("WebhookDelivery", filter=where, order_by=["-id"], limit=limit)
    return [delivery_view(r) for r in rows]


async def due_deliveries(db, now: datetime, limit: int) -> list[dict]:
    return await db.express.list("WebhookDelivery", filter={"status": "pending", "next_attempt_at": {"$lte": now}},
                                 order_by=["id"], limit=limit)  # creation order: events reach each webhook in order


def retry_at(now: datetime, delay_seconds: float) -> datetime:
    return now + timedelta(seconds=delay_seconds)

