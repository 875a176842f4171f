"""Kailash nodes for health: the manual check (probe, then record through the monitor's hysteresis)
and the history with uptime and latency percentiles."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.rows import iso, utcnow
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.gateways import store
from ngm.nodes.gateways.validation import base_url, health_url
from ngm.nodes.health.probe import ProbeResult, probe
from ngm.nodes.health.stats import parse_window, summarize

_RESULT_FIELDS = ("outcome", "response_time_ms", "http_status", "error", "unhealthy_workflows")


@register_node()
class ProbeGatewayNode(ContextNode):
    """Probes the gateway's health URL with its decrypted key; the key never leaves this node."""

    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        ctx = self.ctx
        row = await store.get_gateway(self.db, kw["organization_id"], kw["resource_id"])
        key = ctx.keyring.decrypt(row["api_key_encrypted"]) if row.get("api_key_encrypted") else None
        result = await probe(ctx.probes, health_url(row), key, timeout=float(row["health_check_timeout"]),
                             key_origin=base_url(row))
        return {"probe": result.to_dict()}


@register_node()
class RecordHealthNode(ContextNode):
    """Records a manual probe exactly as the monitor records its own: history, hysteresis, events."""

    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "probe": (dict, REQUIRED)}

    async def async_run(self, **kw):
        result = ProbeResult(**{k: kw["probe"][k] for k in _RESULT_FIELDS})
        summary = await self.ctx.recorder.record_check(kw["organization_id"], kw["resource_id"], result)
        return {"health": summary}


@register_node()
class GetHealthHistoryNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        ctx, p = self.ctx, kw["params"]
        gateway = await store.get_gateway(self.db, kw["organization_id"], kw["resource_id"])
        since = utcnow() - parse_window(p["window"])
        items = await ctx.health_store.history(gateway["id"], since, p["limit"])
        stats = summarize(await ctx.health_store.samples(gateway["id"], since))
        return {"history": {"gateway_id": gateway["id"], "window": p["window"], "since": iso(since),
                            "health_status": gateway["health_status"], "status": gateway["status"],
                            **stats, "items": items}}
