"""Which gateways this instance probes: a share of them when several instances share Redis, all otherwise.

Each instance keeps itself in a Redis sorted set of members (score: when its membership lapses, by Redis's own
clock, so the instances' clocks need not agree), renewed every third of the lease period and left on shutdown.
A gateway belongs to the member a hash ring of the live members gives it (128 points per member), so a joining
or dying instance moves only its own share: a killed one's entry lapses after the lease period and every
survivor drops it at its next renewal. When Redis has been unreachable for three lease periods, every instance
probes every gateway (duplicate probes beat no monitoring); through a shorter outage each keeps its share.
"""

from __future__ import annotations

import hashlib
import logging
import time
from bisect import bisect
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("ngm.monitor")

POINTS_PER_MEMBER = 128
# renew (ARGV[2] > 0: member until now + ARGV[2] ms) or leave (0); drop lapsed members; return the live ones
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 3)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def point(text: str) -> int:
    """A stable 64-bit position on the ring (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Ring:
    """Consistent hashing: a gateway belongs to the member owning the first point at or after its own."""

    def __init__(self, members: tuple[str, ...]):
        pairs = sorted((point(f"{m}#{i}"), m) for m in members for i in range(POINTS_PER_MEMBER))
        self._points = [p for p, _ in pairs]
        self._owners = [m for _, m in pairs]

    def owner(self, position: int) -> str:
        return self._owners[bisect(self._points, position) % len(self._owners)]


class ProbeShare(Protocol):
    owner: str
    members: tuple[str, ...]
    generation: int  # grows whenever what this instance owns may have changed
    mode: str

    @property
    def degraded(self) -> bool: ...

    def owns(self, position: int) -> bool: ...

    async def renew(self) -> None: ...

    async def leave(self) -> None: ...


class WholeShare:
    """Without Redis: this instance probes every gateway."""

    members: tuple[str, ...] = ("this instance",)
    generation = 0
    mode = "single instance: probes every gateway"

    def __init__(self, owner: str = "this instance"):
        self.owner = owner

    @property
    def degraded(self) -> bool:
        return False

    def owns(self, position: int) -> bool:
        return True

    async def renew(self) -> None:
        pass

    async def leave(self) -> None:
        pass


class RedisShare:
    def __init__(self, redis: Any, key: str, owner: str, ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.redis, self.key, self.owner, self.ttl, self.clock = redis, key, owner, ttl, clock
        self.members: tuple[str, ...] = (owner,)
        self.generation = 0
        self.everything = False  # Redis unreachable for long: probe every gateway
        self.mode = "shared through Redis"
        self._ring = Ring(self.members)
        self._unreachable_since: float | None = None

    @property
    def degraded(self) -> bool:
        return self._unreachable_since is not None

    def owns(self, position: int) -> bool:
        return self.everything or self._ring.owner(position) == self.owner

    async def renew(self) -> None:
        try:
            members = await self.redis.eval(_RENEW, 1, self.key, self.owner, int(self.ttl * 1000))
        except Exception as exc:
            now = self.clock()
            if self._unreachable_since is None:
                self._unreachable_since = now
                self.mode = "Redis unreachable: each instance keeps its share; nobody takes over a dead one's"
                log.warning("probe share: Redis unreachable (%s)", type(exc).__name__)
            if now - self._unreachable_since > 3 * self.ttl and not self.everything:
                log.warning("probe share: Redis unreachable for %.0f s; probing every gateway", 3 * self.ttl)
                self.everything = True
                self.generation += 1
                self.mode = "Redis unreachable: probing every gateway"
            return
        if self._unreachable_since is not None:
            log.info("probe share: Redis reachable again")
        self._unreachable_since = None
        self.mode = "shared through Redis"
        live = tuple(sorted(m.decode() if isinstance(m, bytes) else m for m in members))
        if live != self.members or self.everything:
            log.info("probe share: %s", f"{len(live)} instances probe the gateways between them" if len(live) > 1
                     else "this instance probes every gateway (no other one is live)")
            self.members, self._ring, self.everything = live, Ring(live), False
            self.generation += 1

    async def leave(self) -> None:
        try:
            await self.redis.eval(_RENEW, 1, self.key, self.owner, 0)
        except Exception:  # the entry lapses anyway
            pass
