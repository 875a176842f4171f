"""Kailash nodes for health transitions and webhooks."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.rows import parse_time
from ngm.nodes.audit.changes import diff
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.events import store
from ngm.nodes.events.store import make_event


def _audit(webhook_id: str, before, after) -> dict:
    return {"resource_type": "webhook", "resource_id": webhook_id, "changes": diff(before, after)}


@register_node()
class ListTransitionsNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        items = await store.list_transitions(self.db, kw["organization_id"], p.get("gateway_id"),
                                             parse_time(p.get("since")), p["limit"])
        return {"events": {"items": items}}


@register_node()
class CreateWebhookNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        self.ctx.outbound.policy.check_urls(kw["params"], ("url",))
        hook, secret = await store.create_webhook(self.db, self.ctx.keyring, kw["organization_id"],
                                                  kw["params"], kw["actor"].get("name") or kw["actor"].get("id"))
        return {"webhook": {**hook, "secret": secret}, "audit": _audit(hook["id"], None, hook)}


@register_node()
class ListWebhooksNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        return {"webhooks": {"items": await store.list_webhooks(self.db, kw["organization_id"])}}


@register_node()
class GetWebhookNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        return {"webhook": await store.get_webhook(self.db, kw["organization_id"], kw["resource_id"])}


@register_node()
class UpdateWebhookNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        self.ctx.outbound.policy.check_urls(kw["params"], ("url",))
        before, after = await store.update_webhook(self.db, kw["organization_id"], kw["resource_id"],
                                                   kw["params"])
        return {"webhook": after, "audit": _audit(after["id"], before, after)}


@register_node()
class DeleteWebhookNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        hook = await store.delete_webhook(self.db, kw["organization_id"], kw["resource_id"])
        return {"deleted": {"id": hook["id"]}, "audit": _audit(hook["id"], {"url": hook["url"]}, None)}


@register_node()
class RotateWebhookSecretNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        hook, secret = await store.rotate_secret(self.db, self.ctx.keyring, kw["organization_id"],
                                                 kw["resource_id"])
        return {"webhook": {**hook, "secret": secret},
                "audit": {"resource_type": "webhook", "resource_id": hook["id"], "changes": {"secret": "[changed]"}}}


@register_node()
class TestWebhookNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        hook = await store.get_webhook(self.db, kw["organization_id"], kw["resource_id"])
        event = make_event("webhook.test", kw["organization_id"], {"webhook_id": hook["id"],
                                                                   "message": "test delivery from ngm"})
        await store.enqueue_test(self.db, event, hook["id"])
        return {"queued": {"webhook_id": hook["id"], "event_id": event["id"], "event_type": event["type"]}}


@register_node()
class ListDeliveriesNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        items = await store.list_deliveries(self.db, kw["organization_id"], kw["resource_id"], p.get("status"),
                                            p["limit"])
        return {"deliveries": {"items": items}}
