"""API keys of callers: create, list, revoke, and authenticate with a short cache."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import Any

from ngm.dataplane.keys import REVOKED, KeyCache
from ngm.errors import Conflict, Forbidden, NotFound
from ngm.models.database import Queries
from ngm.models.query import insert, select, select_one, update
from ngm.models.rows import iso, new_id, utcnow
from ngm.nodes.auth.keys import Principal, display_prefix, generate_api_key, hash_api_key

TIME_FIELDS = ("revoked_at", "last_used_at", "created_at", "updated_at")
_LAST_USED_EVERY = timedelta(seconds=60)  # bounds the writes that last_used_at costs
OWNER = "org_owner"
log = logging.getLogger("ngm.auth")


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    for key in TIME_FIELDS:
        row[key] = iso(row.get(key))
    row.pop("key_hash", None)
    row["revoked"] = row.get("revoked_at") is not None
    return row


async def create_key(q: Queries, organization_id: str, role: str, name: str, created_by: str | None,
                     limits: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    key = generate_api_key()
    row = {"id": "key_" + new_id()[:16], "organization_id": organization_id, "name": name, "role": role,
           "key_hash": hash_api_key(key), "key_prefix": display_prefix(key), "created_by": created_by,
           **(limits or {})}
    await insert(q, "ApiKey", row)
    return key, await get_key(q, organization_id, row["id"])


async def get_key(q: Queries, organization_id: str, key_id: str, *, lock: bool = False) -> dict[str, Any]:
    row = await select_one(q, "ApiKey", {"id": key_id, "organization_id": organization_id}, lock=lock)
    if row is None:
        raise NotFound(f"API key {key_id} not found", field="key_id")
    return key_view(row)


async def list_keys(q: Queries, organization_id: str, include_revoked: bool) -> list[dict[str, Any]]:
    where: dict[str, Any] = {"organization_id": organization_id}
    if not include_revoked:
        where["revoked_at"] = None
    rows = await select(q, "ApiKey", where, order=["created_at", "id"], limit=10_000)
    return [key_view(r) for r in rows]


async def _keep_an_owner(q: Queries, organization_id: str, key: dict[str, Any], action: str) -> None:
    """An organization keeps at least one active owner key: with none, nobody could mint or revoke an owner
    key any more. The owner keys are locked first, so two revocations at once cannot both pass."""
    if key["role"] != OWNER or key["revoked"]:
        return
    owners = await q.rows(f"SELECT id FROM api_keys WHERE organization_id = :org AND role = :owner AND "
                          f"revoked_at IS NULL{q.lock}", {"org": organization_id, "owner": OWNER})
    if len(owners) <= 1:
        raise Conflict(f"cannot {action} the last active org_owner key of organization {organization_id}: the "
                       "organization would be locked out. Create another owner key first.", field="key_id",
                       code="last_owner_key")


def _may_touch(caller: Principal | None, key: dict[str, Any], action: str) -> None:
    if caller is not None and not caller.local and not caller.allows(key["role"]):
        raise Forbidden(f"an {caller.role} cannot {action} an {key['role']} key", field="key_id")


async def update_key(q: Queries, organization_id: str, key_id: str, changes: dict[str, Any],
                     caller: Principal | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    before = await get_key(q, organization_id, key_id, lock=True)
    _may_touch(caller, before, "change")
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if changes.get("role", OWNER) != OWNER:
        await _keep_an_owner(q, organization_id, before, "demote")
    if changes:
        await update(q, "ApiKey", key_id, changes)
    return before, await get_key(q, organization_id, key_id)


async def revoke_key(q: Queries, organization_id: str, key_id: str, caller: Principal | None = None) -> dict[str, Any]:
    key = await get_key(q, organization_id, key_id, lock=True)
    _may_touch(caller, key, "revoke")
    if not key["revoked"]:
        await _keep_an_owner(q, organization_id, key, "revoke")
        await update(q, "ApiKey", key_id, {"revoked_at": utcnow()})
    return await get_key(q, organization_id, key_id)


class KeyAuthenticator(KeyCache):
    """The key cache over this database's api_keys table."""

    def __init__(self, db: Queries, ttl: float = 2.0, max_entries: int = 10_000):
        # the loader answers REVOKED too, which KeyCache handles but its `load` type (ngm/dataplane/keys.py) omits
        super().__init__(functools.partial(load_principal, db), ttl, max_entries)  # type: ignore[arg-type]


async def load_principal(db: Queries, digest: str) -> Principal | object | None:
    """The key with this digest: its Principal, REVOKED, or None when there is none (marks it used, at most once a
    minute)."""
    row = await select_one(db, "ApiKey", {"key_hash": digest})
    if row is None:
        return None
    if row.get("revoked_at") is not None:
        return REVOKED
    last_used = row.get("last_used_at")
    now = utcnow()
    if last_used is None or now - last_used > _LAST_USED_EVERY:
        try:
            await update(db, "ApiKey", row["id"], {"last_used_at": now})
        except Exception as exc:  # bookkeeping: never a reason to refuse the caller
            log.debug("last_used_at not recorded (%s)", type(exc).__name__)
    return Principal(organization_id=row["organization_id"], role=row["role"], key_id=row["id"],
                     name=row["name"], rate_limit=row.get("rate_limit"), api_rate_limit=row.get("api_rate_limit"))
