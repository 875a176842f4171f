"""The event bus on a real Redis: what one instance publishes, one event or a batch in one message, reaches
another instance's subscribers, each event once and in order, scoped to its organization."""

import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from ngm.nodes.events.bus import RedisBus
from tests.support.processes import REDIS_URL

pytestmark = pytest.mark.anyio


async def test_single_events_and_batches_cross_instances_in_order():
    channel = f"ngm-test:{uuid.uuid4().hex}:events"
    clients = [aioredis.from_url(REDIS_URL) for _ in range(2)]
    here, there = RedisBus(clients[0], channel), RedisBus(clients[1], channel)
    try:
        await there.start()
        everything, org_b = there.subscribe(None), there.subscribe("org-b")
        with anyio.fail_after(5):
            while not await clients[0].pubsub_numsub(channel) or (await clients[0].pubsub_numsub(channel))[0][1] < 1:
                await anyio.sleep(0.02)
        await here.publish({"type": "one", "organization_id": "org-a", "data": {}})
        await here.publish_many([{"type": f"batch-{i}", "organization_id": "org-b" if i % 2 else "org-a", "data": {}}
                                 for i in range(5)])
        got = [(await everything.get(timeout=5))["type"] for _ in range(6)]
        assert got == ["one", "batch-0", "batch-1", "batch-2", "batch-3", "batch-4"]
        assert [(await org_b.get(timeout=5))["type"] for _ in range(2)] == ["batch-1", "batch-3"]
        assert await everything.get(timeout=0.2) is None and await org_b.get(timeout=0.2) is None  # each once
    finally:
        for bus in (here, there):
            await bus.close()
        for client in clients:
            await client.aclose()
