"""ProbeGatewayNode and RecordHealthNode: the manual health check as two steps."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.rows import iso, utcnow
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.gateways import store
from ngm.nodes.gateways.validation import health_url
from ngm.nodes.health.probe import probe


@register_node()
class ProbeGatewayNode(ContextNode):
    """Probes the gateway's health URL with its decrypted key; the key never leaves this node."""

    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "timeout": (float, 5.0)}

    async def async_run(self, **kw):
        ctx = self.ctx
        row = await store.fetch(ctx.db, kw["organization_id"], kw["resource_id"])
        key = ctx.keyring.decrypt(row["api_key_encrypted"]) if row.get("api_key_encrypted") else None
        result = await probe(ctx.http, health_url(row), key, timeout=kw.get("timeout") or 5.0)
        return {"probe": result.to_dict()}


@register_node()
class RecordHealthNode(ContextNode):
    PARAMS = {"resource_id": (str, REQUIRED), "probe": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["probe"]
        now = utcnow()
        status = "healthy" if p["ok"] else "unhealthy"
        summary = p["summary"]
        await store.record_health(self.ctx.db, kw["resource_id"], {
            "health_status": status, "last_health_check": now, "last_health_status": summary,
            "last_response_time_ms": round(p["response_time_ms"], 2),
        })
        return {"health": {"gateway_id": kw["resource_id"], "status": status, "last_check": iso(now),
                           "response_time_ms": round(p["response_time_ms"], 2), "outcome": summary,
                           "http_status": p["http_status"], "error": p["error"]}}
