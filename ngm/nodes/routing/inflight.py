"""Requests in flight per deployment: least-connections reads them, draining waits for them.

Counts are kept per instance; with Redis each instance publishes its non-zero counts every half second
(expiring after a few seconds), so a drain anywhere sees the requests in flight everywhere.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ngm.routing")


class InFlight:
    def __init__(self, redis=None, namespace: str = "ngm", instance: str = "local", ttl_ms: int = 3000):
        self.counts: dict[str, int] = {}  # a plain dict: Counter's arithmetic costs more per request
        self.redis, self.instance, self.ttl_ms = redis, instance, ttl_ms
        self.prefix = f"{namespace}:inflight:"

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
        key = self.prefix + self.instance
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if self.counts:
                    pipe.hset(key, mapping=dict(self.counts))
                    pipe.pexpire(key, self.ttl_ms)
                await pipe.execute()
        except Exception as exc:  # the drain falls back to this instance's own counts
            log.warning("in-flight counts not published (%s)", type(exc).__name__)

    async def total(self, deployment_id: str) -> int:
        """Across instances (with Redis), else this instance's."""
        if self.redis is None:
            return self.counts.get(deployment_id, 0)
        try:
            total = 0
            async for key in self.redis.scan_iter(match=self.prefix + "*", count=100):
                if key.decode() == self.prefix + self.instance:
                    continue
                value = await self.redis.hget(key, deployment_id)
                total += int(value or 0)
            return total + self.counts.get(deployment_id, 0)
        except Exception:
            return self.counts.get(deployment_id, 0)
