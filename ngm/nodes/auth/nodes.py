"""Kailash nodes for callers' API keys."""

from __future__ import annotations

import functools

from kailash.nodes.base import register_node

from ngm.errors import Forbidden
from ngm.nodes.auth import store
from ngm.nodes.auth.keys import role_at_least
from ngm.nodes.base import REQUIRED, ContextNode


@register_node()
class CreateApiKeyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "params": (dict, REQUIRED)}

    async def async_run(self, **kw):
        actor, p = kw["actor"], kw["params"]
        if not actor.get("local") and not role_at_least(actor["role"], p["role"]):
            raise Forbidden(f"an {actor['role']} cannot create an {p['role']} key", field="role")
        limits = {k: p[k] for k in ("rate_limit", "api_rate_limit") if p.get(k) is not None}
        key, row = await store.create_key(self.db, kw["organization_id"], p["role"], p["name"] or p["role"],
                                          actor.get("name") or actor.get("id"), limits)
        audit = {"resource_type": "api_key", "resource_id": row["id"],
                 "changes": {"role": {"to": row["role"]}, "name": {"to": row["name"]}}}
        return {"created": {**row, "key": key}, "audit": audit}


@register_node()
class ListApiKeysNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "params": (dict, {})}

    async def async_run(self, **kw):
        include = bool((kw.get("params") or {}).get("include_revoked"))
        return {"keys": {"items": await store.list_keys(self.db, kw["organization_id"], include)}}


@register_node()
class GetCallerKeyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED)}

    async def async_run(self, **kw):
        a = kw["actor"]
        return {"caller": {"organization_id": kw["organization_id"], "key_id": a["id"], "name": a.get("name") or "",
                           "role": a["role"], "can_change": role_at_least(a["role"], "org_admin"),
                           "can_check": role_at_least(a["role"], "org_member")}}


@register_node()
class UpdateApiKeyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "resource_id": (str, REQUIRED),
              "params": (dict, {})}

    async def async_run(self, **kw):
        before, after = await store.update_key(self.db, kw["organization_id"], kw["resource_id"],
                                               kw.get("params") or {}, _caller(kw))
        await self.after_commit(functools.partial(self.ctx.keys_changed, after["id"]))
        audit = {"resource_type": "api_key", "resource_id": after["id"],
                 "changes": {k: {"from": before.get(k), "to": after.get(k)} for k in ("name", "rate_limit",
                             "api_rate_limit") if before.get(k) != after.get(k)}}
        return {"updated": after, "audit": audit}


def _caller(kw):
    from ngm.nodes.auth.keys import Principal

    a = kw["actor"]
    return Principal(kw["organization_id"], a["role"], a["id"], a.get("name", ""), bool(a.get("local")))


@register_node()
class RevokeApiKeyNode(ContextNode):
    PARAMS = {"organization_id": (str, REQUIRED), "actor": (dict, REQUIRED), "resource_id": (str, REQUIRED)}

    async def async_run(self, **kw):
        row = await store.revoke_key(self.db, kw["organization_id"], kw["resource_id"], _caller(kw))
        # refused here at once, elsewhere when told
        await self.after_commit(functools.partial(self.ctx.keys_changed, row["id"], revoked=True))
        audit = {"resource_type": "api_key", "resource_id": row["id"], "changes": {"revoked": {"to": True}}}
        return {"revoked": row, "audit": audit}
