"""Requests in flight per deployment: least-connections reads them, draining waits for them.

Counts are kept per instance; with Redis each instance publishes its non-zero counts every half second
(expiring after a few seconds) and reads the others', so least connections weighs the requests in flight
on every instance (the others' as of their last publication) and a drain anywhere waits for all of them.
Each publication also stamps the instance in a members set, so a reader can tell "nothing in flight there"
from "not heard from there".

When Redis fails, least connections goes on with this instance's counts (the fallback is logged once, and
shown by /readyz), but nothing that needs every instance's view decides on a partial one: `total_everywhere`
raises when this instance cannot read Redis, and also while another instance that was publishing has gone
silent (it may have lost Redis with requests in flight) for less than the requests' own time limit. A drain
then waits, for the view or for its deadline. An instance that stops cleanly leaves the set.
"""

from __future__ import annotations

import time
from typing import Any

from ngm.fallbacks import Fallback

FORGET_MS = 3_600_000  # a member silent this long is dropped from the set


class SharedViewUnavailable(Exception):
    """The other instances' in-flight counts cannot be read now."""


class InFlight:
    def __init__(self, redis: Any = None, namespace: str = "ngm", instance: str = "local", ttl_ms: int = 3000) -> None:
        self.counts: dict[str, int] = {}  # a plain dict: Counter's arithmetic costs more per request
        self.elsewhere: dict[str, int] = {}  # the other instances' counts as last published (with Redis)
        self.redis, self.instance, self.ttl_ms = redis, instance, ttl_ms
        self.prefix = f"{namespace}:inflight:"
        self.members = f"{namespace}:inflight-members"  # instance -> when it last published (ms)
        self.fallback = Fallback("in-flight counts", "Redis unreachable: counting this instance's requests alone; "
                                                     "drains wait for Redis or their deadline")

    def start(self, deployment_id: str) -> None:
        counts = self.counts
        counts[deployment_id] = counts.get(deployment_id, 0) + 1

    def finish(self, deployment_id: str) -> None:
        counts = self.counts
        n = counts.get(deployment_id, 0) - 1
        if n > 0:
            counts[deployment_id] = n
        else:
            counts.pop(deployment_id, None)

    async def publish(self) -> None:
        if self.redis is None:
            return
        key, now_ms = self.prefix + self.instance, int(time.time() * 1000)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if self.counts:
                    pipe.hset(key, mapping=dict(self.counts))
                    pipe.pexpire(key, self.ttl_ms)
                pipe.zadd(self.members, {self.instance: now_ms})
                pipe.zremrangebyscore(self.members, 0, now_ms - FORGET_MS)
                await pipe.execute()
        except Exception as exc:
            self.fallback.engage(f"publishing failed: {type(exc).__name__}")

    async def _published_elsewhere(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        async for key in self.redis.scan_iter(match=self.prefix + "*", count=100):
            if key.decode() == self.prefix + self.instance:
                continue
            for deployment_id, n in (await self.redis.hgetall(key)).items():
                name = deployment_id.decode()
                totals[name] = totals.get(name, 0) + int(n)
        return totals

    async def read_elsewhere(self) -> None:
        """Refresh `elsewhere` (after each publication); without Redis there is nobody else."""
        if self.redis is None:
            return
        try:
            self.elsewhere = await self._published_elsewhere()
        except Exception as exc:  # least connections goes on with this instance's own counts
            self.elsewhere = {}
            self.fallback.engage(f"reading failed: {type(exc).__name__}")
            return
        self.fallback.clear()

    async def total_everywhere(self, deployment_id: str, patience: float = 0.0,
                               present: tuple[str, ...] = ()) -> int:
        """Across instances, read now. Raises SharedViewUnavailable when the others cannot be read; when one of
        them has not published for longer than a publication lives but less than `patience` seconds (the
        longest its requests may last); or when one known to be `present` (through the database) has no
        fresh publication at all: its requests may still be in flight."""
        if self.redis is None:
            return self.counts.get(deployment_id, 0)
        try:
            members = await self.redis.zrange(self.members, 0, -1, withscores=True)
            elsewhere = await self._published_elsewhere()
        except Exception as exc:
            self.fallback.engage(f"reading failed: {type(exc).__name__}")
            raise SharedViewUnavailable(str(exc)) from None
        now_ms = time.time() * 1000
        heard = {}
        for member, last_ms in members:
            name = member.decode() if isinstance(member, bytes) else member
            heard[name] = silent = now_ms - last_ms
            if name != self.instance and self.ttl_ms < silent < patience * 1000:
                raise SharedViewUnavailable(f"instance {name} has not published for {silent / 1000:.1f} s")
        for name in present:
            if name != self.instance and heard.get(name, float("inf")) > self.ttl_ms:
                raise SharedViewUnavailable(f"instance {name} is running but its in-flight counts are not in Redis")
        return elsewhere.get(deployment_id, 0) + self.counts.get(deployment_id, 0)

    async def total(self, deployment_id: str) -> int:
        """For display: across instances when they can be read, else this instance's (/readyz says so)."""
        try:
            return await self.total_everywhere(deployment_id)
        except SharedViewUnavailable:
            return self.counts.get(deployment_id, 0)

    async def leave(self) -> None:
        """A clean stop: nothing of this instance is in flight any more, and nobody need wait to hear from it."""
        if self.redis is None:
            return
        try:
            await self.redis.delete(self.prefix + self.instance)
            await self.redis.zrem(self.members, self.instance)
        except Exception:  # its publication expires; readers wait at most for its requests' time limit
            pass
