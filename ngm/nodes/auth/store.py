"""API keys of callers: create, list, revoke, and authenticate with a short cache."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from ngm.errors import Forbidden, NotFound, Unauthorized
from ngm.memo import keep
from ngm.models.rows import new_id, normalize, parse_time, utcnow
from ngm.nodes.auth.keys import Principal, display_prefix, generate_api_key, hash_api_key, looks_like_api_key

TIME_FIELDS = ("revoked_at", "last_used_at")
_LAST_USED_EVERY = timedelta(seconds=60)  # bounds the writes that last_used_at costs
log = logging.getLogger("ngm.auth")


def _quietly(task: asyncio.Task) -> None:
    """A background re-read that failed: the entry expires and the next request loads it (and sees why)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("API key re-read failed (%s); retried on the next request", type(task.exception()).__name__)


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
    which is how long a revoked key may keep working on other instances.

    One load per key at a time, however many requests present it at once, and a key in use is re-read in
    the background during the second half of its ttl, so requests do not wait for the database at every
    expiry. (Before: every 2 s all concurrent requests of a busy key missed together and each ran its own
    query on the event loop, stalling the router for 50-290 ms.)"""

    def __init__(self, db, ttl: float = 2.0, max_entries: int = 10_000):
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # presented key -> its digest: a SHA-256 per request was 3% of the router's CPU. It holds keys in
        # memory as the request buffers do; it decides nothing (the answer is _cache's, which expires).
        self._digests: dict[str, str] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._generation = 0  # forget() bumps it: a load begun before does not store its answer

    def cached(self, presented: str | None) -> Principal | None:
        """The answer without waiting when the cache has it: the Principal, or Unauthorized raised; None
        when the key must be loaded first (await authenticate()). The router calls this for every request."""
        digest = self._digests.get(presented)
        if digest is None:
            digest = self._digest(presented)
        hit = self._cache.get(digest)
        if hit is None:
            return None
        now = time.monotonic()
        if hit[0] <= now:
            return None
        if hit[0] - now < self._ttl / 2 and digest not in self._loading:
            self._start_load(digest).add_done_callback(_quietly)  # refresh ahead; errors: next miss
        if hit[1] is None:
            raise Unauthorized("invalid or revoked API key")
        return hit[1]

    def _digest(self, presented: str | None) -> str:
        if not presented:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
        if not looks_like_api_key(presented):
            raise Unauthorized("invalid API key")
        return keep(self._digests, presented, hash_api_key(presented), self._max)

    async def authenticate(self, presented: str | None) -> Principal:
        principal = self.cached(presented)
        if principal is not None:
            return principal
        digest = self._digests.get(presented) or self._digest(presented)
        task = self._loading.get(digest) or self._start_load(digest)
        principal = await asyncio.shield(task)  # a caller that goes away does not cancel the others' load
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    def forget(self) -> None:
        self._cache.clear()
        self._generation += 1

    def _start_load(self, digest: str) -> asyncio.Task:
        task = self._loading[digest] = asyncio.ensure_future(self._load_and_keep(digest))
        return task

    async def _load_and_keep(self, digest: str) -> Principal | None:
        generation = self._generation
        try:
            principal = await self._load(digest)
        finally:
            self._loading.pop(digest, None)
        if generation == self._generation:
            keep(self._cache, digest, (time.monotonic() + self._ttl, principal), self._max)
        return principal

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

