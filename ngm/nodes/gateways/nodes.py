"""Kailash nodes of the gateway registry, each over a function of `store`.

Mutating nodes also output `audit` ({resource_type, resource_id, changes}) for RecordAuditNode, which writes
it in the same transaction.
"""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.query import encode_cursor, page_after
from ngm.nodes.audit.changes import diff
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.gateways import store

URL_FIELDS = ("api_url", "health_check_url", "mcp_url")


def _audit(gateway_id: str, before: dict | None, after: dict | None) -> dict:
    return {"resource_type": "gateway", "resource_id": gateway_id, "changes": diff(before, after)}


@register_node()
class CreateGatewayNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "record": (dict, REQUIRED)}

    async def async_run(self, **kw):
        self.ctx.outbound.policy.check_urls(kw["record"], URL_FIELDS)
        row = await store.create_gateway(self.db, kw["organization_id"], kw["record"])
        return {"gateway": store.public_view(row), "audit": _audit(row["id"], None, row)}


@register_node()
class GetGatewayNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        return {"gateway": await store.get_public(self.db, kw["organization_id"], kw["resource_id"])}


@register_node()
class ListGatewaysNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        filters = {k: p.get(k) for k in ("environment", "status", "health_status")}
        after = page_after(p, "gateways", len(store.LIST_ORDER))
        items, total, next_key = await store.list_public_page(self.db, kw["organization_id"], filters, p["limit"],
                                                              p["offset"], after)
        return {"page": {"items": items, "total": total, "limit": p["limit"], "offset": p["offset"],
                         "next_cursor": encode_cursor("gateways", next_key) if next_key is not None else None}}


@register_node()
class UpdateGatewayNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "record": (dict, REQUIRED)}

    async def async_run(self, **kw):
        self.ctx.outbound.policy.check_urls(kw["record"], URL_FIELDS)
        before, after = await store.update_gateway(self.db, kw["organization_id"], kw["resource_id"], kw["record"],
                                          self.ctx.keyring)
        await self.after_commit(self.ctx.routing_changed)  # limits, status, URL and key reach every router
        return {"gateway": store.public_view(after), "audit": _audit(after["id"], before, after)}


@register_node()
class DeleteGatewayNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, {})}

    async def async_run(self, **kw):
        force = bool((kw.get("params") or {}).get("force"))
        gone = await store.delete_gateway(self.db, kw["organization_id"], kw["resource_id"], force)
        await self.after_commit(self.ctx.routing_changed)
        audit = _audit(gone["id"], {"name": gone["name"]}, None)
        audit["changes"]["deleted_deployments"] = {"to": gone["deleted_deployments"]}
        return {"deleted": {"id": gone["id"], "deleted_deployments": gone["deleted_deployments"]}, "audit": audit}


@register_node()
class ResolveGatewayNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        row = await store.resolve(self.db, kw["organization_id"], kw["params"]["environment"])
        return {"gateway": store.public_view(row)}
