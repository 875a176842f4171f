"""Requests in flight across instances (a real Redis): a drain may only trust a view that covers every
instance, so an instance that stopped publishing, with requests perhaps still in flight, makes the view
partial until its requests' time limit has passed; one that left cleanly does not."""

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from ngm.dataplane.inflight import InFlight, SharedViewUnavailable
from tests.support.processes import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair():
    client = aioredis.from_url(REDIS_URL)
    namespace = f"ngm-test-{uuid.uuid4().hex[:8]}"
    a, b = (InFlight(client, namespace, name, ttl_ms=300) for name in ("a", "b"))
    yield a, b
    for key in await client.keys(f"{namespace}*"):
        await client.delete(key)
    await client.aclose()


async def test_a_silent_instance_makes_the_view_partial_until_its_requests_must_be_over(pair):
    a, b = pair
    b.start("dep")
    await b.publish()
    await a.publish()
    assert await a.total_everywhere("dep", patience=30) == 1
    await asyncio.sleep(0.5)  # b stops publishing (it lost Redis, say): its counts expire, its request may not
    await a.read_elsewhere()
    assert a.elsewhere == {}  # least connections goes on without it
    with pytest.raises(SharedViewUnavailable, match="instance b has not published"):
        await a.total_everywhere("dep", patience=30)
    assert await a.total("dep") == 0  # for display: what can be read
    assert await a.total_everywhere("dep", patience=0.4) == 0  # past its requests' time limit: they are over


async def test_an_instance_that_left_cleanly_is_not_waited_for(pair):
    a, b = pair
    b.start("dep")
    await b.publish()
    b.finish("dep")
    await b.leave()
    await asyncio.sleep(0.5)
    assert await a.total_everywhere("dep", patience=30) == 0


async def test_an_idle_instance_that_keeps_publishing_counts_as_nothing_in_flight(pair):
    a, b = pair
    for _ in range(3):  # nothing in flight on b, but it is heard from
        await b.publish()
        await asyncio.sleep(0.2)
    assert await a.total_everywhere("dep", patience=30) == 0


async def test_an_instance_present_in_the_database_but_not_in_redis_makes_the_view_partial(pair):
    """One that never reached Redis (or whose stamps Redis lost on a restart) is still known through the
    database: its silence in Redis is not taken for nothing in flight."""
    a, b = pair
    await a.publish()
    with pytest.raises(SharedViewUnavailable, match="instance b is running"):
        await a.total_everywhere("dep", patience=30, present=("a", "b"))
    await b.publish()
    assert await a.total_everywhere("dep", patience=30, present=("a", "b")) == 0
