"""API keys of callers: create, list, revoke, and authenticate with a short cache."""

from __future__ import annotations

import time
from datetime import timedelta

from ngm.errors import Forbidden, NotFound, Unauthorized
from ngm.models.rows import new_id, normalize, parse_time, utcnow
from ngm.nodes.auth.keys import Principal, display_prefix, generate_api_key, hash_api_key, looks_like_api_key

TIME_FIELDS = ("revoked_at", "last_used_at")
_LAST_USED_EVERY = timedelta(seconds=60)  # bounds the writes that last_used_at costs


def key_view(row: dict) -> dict:
    out = normalize(row, times=TIME_FIELDS)
    out.pop("key_hash", None)
    out["revoked"] = out.get("revoked_at") is not None
    return out


async def create_key(db, organization_id: str, role: str, name: str, created_by: str | None,
                     limits: dict | None = None) -> tuple[str, dict]:
    key = generate_api_key()
    row = {"id": "key_" + new_id()[:16], "organization_id": organization_id, "name": name, "role": role,
           "key_hash": hash_api_key(key), "key_prefix": display_prefix(key), "created_by": created_by,
           **(limits or {})}
    await db.express.create("ApiKey", row)
    return key, await fetch_key(db, organization_id, row["id"])


async def fetch_key(db, organization_id: str, key_id: str) -> dict:
    rows = await db.express.list("ApiKey", filter={"id": key_id, "organization_id": organization_id}, limit=1)
    if not rows:
        raise NotFound(f"API key {key_id} not found", field="key_id")
    return key_view(rows[0])


async def list_keys(db, organization_id: str, include_revoked: bool) -> list[dict]:
    where = {"organization_id": organization_id}
    if not include_revoked:
        where["revoked_at"] = None
    rows = await db.express.list("ApiKey", filter=where, order_by=["created_at", "id"], limit=10_000)
    return [key_view(r) for r in rows]


async def update_key(db, organization_id: str, key_id: str, changes: dict, caller: Principal | None = None
                     ) -> tuple[dict, dict]:
    before = await fetch_key(db, organization_id, key_id)
    if caller is not None and not caller.local and not caller.allows(before["role"]):
        raise Forbidden(f"a {caller.role} cannot change a {before['role']} key", field="key_id")
    changes = {k: v for k, v in changes.items() if before.get(k) != v}
    if changes:
        await db.express.update("ApiKey", key_id, changes)
    return before, await fetch_key(db, organization_id, key_id)


async def revoke_key(db, organization_id: str, key_id: str, caller: Principal | None = None) -> dict:
    key = await fetch_key(db, organization_id, key_id)
    if caller is not None and not caller.local and not caller.allows(key["role"]):
        raise Forbidden(f"a {caller.role} cannot revoke a {key['role']} key", field="key_id")
    if not key["revoked"]:
        await db.express.update("ApiKey", key_id, {"revoked_at": utcnow()})
    return await fetch_key(db, organization_id, key_id)


class KeyAuthenticator:
    """Resolve a presented key to a Principal. Answers (and misses) are cached for `ttl` seconds,
    which is how long a revoked key may keep working on other instances."""

    def __init__(self, db, ttl: float = 2.0, max_entries: int = 10_000):
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
        if not looks_like_api_key(presented):
            raise Unauthorized("invalid API key")
        digest = hash_api_key(presented)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await self._load(digest)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    def forget(self) -> None:
        self._cache.clear()

    async def _load(self, digest: str) -> Principal | None:
        rows = await self._db.express.list("ApiKey", filter={"key_hash": digest}, limit=1)
        if not rows or rows[0].get("revoked_at") is not None:
            return None
        row = rows[0]
        last_used = row.get("last_used_at")
        now = utcnow()
        if last_used is None or now - parse_time(last_used) > _LAST_USED_EVERY:
            await self._db.express.update("ApiKey", row["id"], {"last_used_at": now})
        return Principal(organization_id=row["organization_id"], role=row["role"], key_id=row["id"],
                         name=row["name"], rate_limit=row.get("rate_limit"), api_rate_limit=row.get("api_rate_limit"))

