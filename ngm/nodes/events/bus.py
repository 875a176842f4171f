"""Publish/subscribe of events within an organization.

LocalBus fans out in process. RedisBus publishes on a Redis channel and every instance's listener fans
out to its own subscribers, so an SSE client on any instance sees events produced on any other. A slow
subscriber never blocks a publisher: its queue is bounded and the oldest event is dropped.
"""

from __future__ import annotations

import asyncio
import json

from ngm.fallbacks import Fallback
from ngm.tasks import stop_tasks

# The events on the bus. Those of an organization reach its SSE clients (and transitions its webhooks); the
# instance-wide ones (organization "") tell every instance's router what changed.
HEALTH_TRANSITION = "health.transition"
HEALTH_PROBE = "health.probe"
CIRCUIT_OPEN = "router.circuit_open"
ROUTING_CHANGED = "routing.changed"
KEYS_CHANGED = "keys.changed"


class Subscription:
    def __init__(self, bus: "LocalBus", organization_id: str | None, maxsize: int):
        self.bus = bus
        self.organization_id = organization_id
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: dict) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> dict | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self.bus._subscribers.discard(self)


class LocalBus:
    def __init__(self):
        self._subscribers: set[Subscription] = set()

    def subscribe(self, organization_id: str | None, maxsize: int = 1000) -> Subscription:
        """organization_id None: every organization's events (the router's and the monitor's own use)."""
        sub = Subscription(self, organization_id, maxsize)
        self._subscribers.add(sub)
        return sub

    def deliver_locally(self, event: dict) -> None:
        for sub in list(self._subscribers):
            if sub.organization_id is None or sub.organization_id == event.get("organization_id"):
                sub.offer(event)

    async def publish(self, event: dict) -> None:
        self.deliver_locally(event)

    async def publish_many(self, events: list[dict]) -> None:
        for event in events:
            self.deliver_locally(event)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._subscribers.clear()


class RedisBus(LocalBus):
    def __init__(self, redis, channel: str):
        super().__init__()
        self.redis = redis
        self.channel = channel
        self._task: asyncio.Task | None = None
        self.fallback = Fallback("event bus", "Redis unreachable: events reach this instance's subscribers only "
                                              "(SSE clients, routing changes and health news of other instances wait)")

    async def publish(self, event: dict) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: list[dict]) -> None:
        """One message for all of them (a batch of probe results: a message per probe cost every instance a
        Redis round trip and a delivery per probe)."""
        if not events:
            return
        try:
            await self.redis.publish(self.channel, json.dumps(events[0] if len(events) == 1 else events))
        except Exception as exc:  # Redis down: at least this instance's subscribers get them
            self.fallback.engage(f"publish failed: {type(exc).__name__}")
            for event in events:
                self.deliver_locally(event)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="ngm-event-listener")

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                self.fallback.clear()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = json.loads(message["data"])
                        for event in data if isinstance(data, list) else (data,):
                            self.deliver_locally(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried every second; said once per outage
                self.fallback.engage(f"subscription lost: {type(exc).__name__}")
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        await super().close()
