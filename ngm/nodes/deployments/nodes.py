"""Kailash nodes for agent deployments."""

from __future__ import annotations

from kailash.nodes.base import register_node

from ngm.models.query import encode_cursor, page_after
from ngm.nodes.audit.changes import diff
from ngm.nodes.base import REQUIRED, ContextNode
from ngm.nodes.deployments import store


def _audit(deployment_id: str, before, after) -> dict:
    return {"resource_type": "deployment", "resource_id": deployment_id, "changes": diff(before, after)}


class _DeploymentNode(ContextNode):
    async def with_in_flight(self, row: dict) -> dict:
        """Views carry the requests in flight now (across instances when Redis is configured)."""
        return row | {"in_flight": await self.ctx.inflight.total(row["id"])}


@register_node()
class CreateDeploymentNode(_DeploymentNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        actor = kw["actor"]
        row = await store.create_deployment(self.db, kw["organization_id"], kw["params"],
                                 actor.get("name") or actor.get("id") or "unknown")
        await self.after_commit(self.ctx.routing_changed)
        return {"deployment": await self.with_in_flight(row), "audit": _audit(row["id"], None, row)}


@register_node()
class ListDeploymentsNode(_DeploymentNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        p = kw["params"]
        filters = {k: p.get(k) for k in ("gateway_id", "agent_id", "status")}
        rows, total, next_key = await store.list_page(self.db, kw["organization_id"], filters, p["limit"],
                                                      p["offset"], page_after(p, "deployments", len(store.LIST_ORDER)))
        return {"page": {"items": [await self.with_in_flight(r) for r in rows], "total": total,
                         "limit": p["limit"], "offset": p["offset"],
                         "next_cursor": encode_cursor("deployments", next_key) if next_key is not None else None}}


@register_node()
class GetDeploymentNode(_DeploymentNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        row = await store.get_deployment(self.db, kw["organization_id"], kw["resource_id"])
        return {"deployment": await self.with_in_flight(row)}


@register_node()
class UpdateDeploymentNode(_DeploymentNode):
    """Config: change = "patch" (weight, version, workspace), "activate", "deactivate" or "drain"."""

    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED), "params": (dict, {}),
              "change": (str, REQUIRED)}

    async def async_run(self, **kw):
        db, org, dep, p = self.db, kw["organization_id"], kw["resource_id"], kw.get("params") or {}
        change = kw["change"]
        if change == "patch":
            before, after = await store.update_deployment(db, org, dep, p)
        elif change == "drain":
            before, after = await store.start_drain(db, org, dep, p.get("timeout_seconds", 30.0))
        else:
            before, after = await store.set_status(db, org, dep, "active" if change == "activate" else "inactive")
        await self.after_commit(self.ctx.routing_changed)
        return {"deployment": await self.with_in_flight(after), "audit": _audit(dep, before, after)}


@register_node()
class DeleteDeploymentNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        row = await store.delete_deployment(self.db, kw["organization_id"], kw["resource_id"])
        await self.after_commit(self.ctx.routing_changed)
        return {"deleted": {"id": row["id"]},
                "audit": _audit(row["id"], {"agent_id": row["agent_id"], "gateway_id": row["gateway_id"]}, None)}
