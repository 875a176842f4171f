"""The API keys the router has met: answers cached per key, loaded through the control plane's loader."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ngm.dataplane.memo import keep
from ngm.errors import DatabaseUnavailable, Unauthorized
from ngm.nodes.auth.keys import Principal, hash_api_key, looks_like_api_key

log = logging.getLogger("ngm.auth")
REVOKED = object()  # what a loader answers for a key it knows to be revoked


def _quietly(task: asyncio.Task[Principal | None]) -> None:
    """A background re-read that failed: the entry expires and the next request loads it (and sees why)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("API key re-read failed (%s); retried on the next request", type(task.exception()).__name__)


class KeyCache:
    """Resolve a presented key to a Principal. Answers are cached for `ttl` seconds, which is how long a
    revoked key may keep working on other instances (this one forgets it at once).

    One load per key at a time, however many requests present it at once, and a key in use is re-read in
    the background during the second half of its ttl, so requests do not wait for the database at every
    expiry. (Before: every 2 s all concurrent requests of a busy key missed together and each ran its own
    query on the event loop, stalling the router for 50-290 ms.)

    While the database is unreachable, what was last read stands (the data plane outlives its control plane):
    a key known before keeps working, a key revoked or refused before stays refused, and a key never seen gets
    503 `database_unavailable`, never a 500. Known keys and refused ones are remembered apart, so a flood of
    made-up keys cannot push the known ones out; a change of one key forgets that key alone."""

    def __init__(self, load: Callable[[str], Awaitable[Principal | None]], ttl: float = 2.0,
                 max_entries: int = 10_000):
        self._load = load  # a key's digest -> its Principal, None when unknown or revoked (the control plane's)
        self._ttl = ttl
        self._max = max_entries
        self._known: dict[str, tuple[float, Principal]] = {}  # digest -> (fresh until, principal)
        self._per_org: dict[str, int] = {}  # entries of _known per organization: the fullest one gives way
        self._refused: dict[str, float] = {}  # digest -> refused until (kept, expired, through an outage)
        # digests of keys known to be revoked: apart, so that a flood of made-up keys cannot wash them out
        self._revoked: dict[str, bool] = {}
        # presented key -> its digest: a SHA-256 per request was 3% of the router's CPU. It holds keys in
        # memory as the request buffers do; it decides nothing (the answers above do, and expire).
        # (looked up with whatever was presented, None too; only keys that look like API keys are kept)
        self._digests: dict[str | None, str] = {}
        self._loading: dict[str, asyncio.Task[Principal | None]] = {}
        self._generation = 0  # forget() bumps it: a load begun before does not store its answer

    def cached(self, presented: str | None) -> Principal | None:
        """The answer without waiting when the cache has it: the Principal, or Unauthorized raised; None
        when the key must be loaded first (await authenticate()). The router calls this for every request."""
        digest = self._digests.get(presented)
        if digest is None:
            digest = self._digest(presented)
        hit = self._known.get(digest)
        now = time.monotonic()
        if hit is None:
            if self._refused.get(digest, 0.0) > now:
                raise Unauthorized("invalid or revoked API key")
            return None
        if hit[0] <= now:
            return None
        if hit[0] - now < self._ttl / 2 and digest not in self._loading:
            self._start_load(digest).add_done_callback(_quietly)  # refresh ahead; errors: next miss
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

    def forget(self, key_id: str | None = None, revoked: bool = False) -> None:
        """A key changed: read it again before its next use (kept meanwhile as what was last read, should the
        database be down); a revoked key is refused from now on. Without a key id, every key is read again."""
        self._generation += 1
        now = time.monotonic()
        for digest, (_, principal) in list(self._known.items()):
            if key_id is None or principal.key_id == key_id:
                if revoked:
                    self._drop(digest)
                    self._refused[digest] = now + self._ttl
                    keep(self._revoked, digest, True, self._max)
                else:
                    self._known[digest] = (0.0, principal)

    def _start_load(self, digest: str) -> asyncio.Task[Principal | None]:
        task = self._loading[digest] = asyncio.ensure_future(self._load_and_keep(digest))
        return task

    async def _load_and_keep(self, digest: str) -> Principal | None:
        generation = self._generation
        try:
            principal = await self._load(digest)
            if principal is REVOKED:
                keep(self._revoked, digest, True, self._max)
                principal = None
        except DatabaseUnavailable:
            if digest in self._revoked or digest in self._refused:
                return None  # refused before, refused still
            last = self._known.get(digest)
            if last is None:
                raise
            principal = last[1]  # as last read, until the database answers again
        finally:
            self._loading.pop(digest, None)
        if generation == self._generation:
            until = time.monotonic() + self._ttl
            if principal is None:
                self._drop(digest)
                keep(self._refused, digest, until, self._max)
            else:
                self._refused.pop(digest, None)
                self._remember(digest, until, principal)
        return principal

    def _remember(self, digest: str, until: float, principal: Principal) -> None:
        """Keep a known key; when full, the organization holding the most entries gives up its oldest, so one
        organization's many keys cannot push another's out (as a flood of made-up keys cannot at all)."""
        if digest not in self._known:
            if len(self._known) >= self._max:
                fullest = max(self._per_org, key=self._per_org.__getitem__)
                self._drop(next(d for d, (_, p) in self._known.items() if p.organization_id == fullest))
            org = principal.organization_id
            self._per_org[org] = self._per_org.get(org, 0) + 1
        self._known[digest] = (until, principal)

    def _drop(self, digest: str) -> None:
        entry = self._known.pop(digest, None)
        if entry is not None:
            org = entry[1].organization_id
            self._per_org[org] -= 1
            if not self._per_org[org]:
                del self._per_org[org]
