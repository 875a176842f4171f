"""Who probes: one instance at a time when several share Redis; without Redis, this instance.

A RedisLease is a key set with NX and a TTL, renewed by its holder every third of the TTL and released
on shutdown; when the holder dies the key expires and another instance takes over. When Redis has been
unreachable for three TTLs, every instance probes (duplicate probes beat no monitoring).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

log = logging.getLogger("ngm.lease")

_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "else return 0 end")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LocalLease:
    ttl = 10.0
    held = may_work = True
    mode = "single instance"

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        pass


class RedisLease:
    def __init__(self, redis, key: str, ttl: float = 10.0, clock=time.monotonic):
        self.redis, self.ttl, self.key, self.clock = redis, ttl, key, clock
        self.owner = instance_id()
        self.held = False
        self.fallback = False  # Redis unreachable for long: work without a lease
        self.mode = "redis lease"
        self._unreachable_since: float | None = None

    @property
    def may_work(self) -> bool:
        return self.held or self.fallback

    @property
    def unreachable(self) -> bool:
        return self._unreachable_since is not None

    async def hold(self) -> bool:
        """Acquire or renew; returns whether this instance may probe now."""
        ms = int(self.ttl * 1000)
        try:
            if self.held:
                self.held = bool(await self.redis.eval(_RENEW, 1, self.key, self.owner, ms))
                if not self.held:
                    log.warning("monitor lease lost to another instance")
            if not self.held:
                self.held = bool(await self.redis.set(self.key, self.owner, nx=True, px=ms))
                if self.held:
                    log.info("monitor lease acquired by %s", self.owner)
            self._unreachable_since = None
            self.fallback = False
            self.mode = "redis lease"
            return self.held
        except Exception as exc:
            now = self.clock()
            if self._unreachable_since is None:
                self._unreachable_since = now
                self.mode = "redis unreachable: the holder of the lease keeps probing; nobody else can take over"
                log.warning("monitor lease: Redis unreachable (%s)", type(exc).__name__)
            if now - self._unreachable_since > 3 * self.ttl:
                if not self.fallback:
                    log.warning("monitor lease: Redis unreachable for %.0f s; working without a lease", 3 * self.ttl)
                self.fallback = True
                self.mode = "redis unreachable: working without a lease"
            return self.may_work  # a holder keeps probing through a short outage; nobody else can take over

    async def release(self) -> None:
        if self.held:
            try:
                await self.redis.eval(_RELEASE, 1, self.key, self.owner)
            except Exception:  # expiry releases it anyway
                pass
            self.held = False
