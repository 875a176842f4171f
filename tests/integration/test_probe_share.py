"""The probing share (ngm/nodes/health/share.py) on a real Redis: instances agree on who probes which gateway,
every gateway has exactly one prober, a joining or leaving instance moves only its own share, a dead one's share
is taken over after its membership lapses, and an instance that loses Redis for long probes everything."""

import os
import subprocess
import sys
import uuid

import anyio
import pytest
import redis.asyncio as aioredis

from ngm.nodes.health.share import RedisShare, Ring, point
from tests.support.processes import REDIS_URL

pytestmark = pytest.mark.anyio
GATEWAYS = [point(uuid.uuid4().hex) for _ in range(5000)]


@pytest.fixture
async def redis():
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def owners(shares) -> list[set[int]]:
    return [{g for g in GATEWAYS if s.owns(g)} for s in shares]


async def test_instances_split_the_gateways_exactly_and_a_change_moves_only_one_share(redis):
    key = f"ngm-test:{uuid.uuid4().hex}:members"
    shares = [RedisShare(redis, key, f"instance-{i}", ttl=5.0) for i in range(3)]
    for s in shares[:2]:
        await s.renew()
    await shares[0].renew()
    two = owners(shares[:2])
    assert two[0].isdisjoint(two[1]) and two[0] | two[1] == set(GATEWAYS)
    assert all(len(o) > len(GATEWAYS) / 4 for o in two), [len(o) for o in two]  # near half each

    await shares[2].renew()  # a third joins; every instance sees it at its next renewal
    for s in shares:
        await s.renew()
    assert {s.members for s in shares} == {("instance-0", "instance-1", "instance-2")}
    three = owners(shares)
    assert sum(len(o) for o in three) == len(GATEWAYS) and set().union(*three) == set(GATEWAYS)
    assert all(len(o) > len(GATEWAYS) / 5 for o in three), [len(o) for o in three]
    assert three[0] <= two[0] and three[1] <= two[1]  # the newcomer took from both; nothing else moved

    generation = shares[0].generation
    await shares[2].leave()  # a clean shutdown hands its share back at the others' next renewal
    for s in shares[:2]:
        await s.renew()
    assert shares[0].generation == generation + 1
    assert owners(shares[:2]) == two


async def test_a_dead_instance_lapses_after_the_lease_period(redis):
    key = f"ngm-test:{uuid.uuid4().hex}:members"
    alive, dead = RedisShare(redis, key, "alive", ttl=0.6), RedisShare(redis, key, "dead", ttl=0.6)
    await dead.renew()
    await alive.renew()
    assert alive.members == ("alive", "dead")
    await anyio.sleep(0.3)
    await alive.renew()
    assert alive.members == ("alive", "dead")  # not yet: its membership runs for the lease period
    await anyio.sleep(0.4)
    await alive.renew()
    assert alive.members == ("alive",) and all(alive.owns(g) for g in GATEWAYS)


async def test_without_redis_an_instance_keeps_its_share_then_probes_everything():
    now = [0.0]
    gone = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens on port 1
    share = RedisShare(gone, "k", "me", ttl=1.0, clock=lambda: now[0])
    share.members, share._ring = ("me", "other"), Ring(("me", "other"))  # as last seen
    mine = {g for g in GATEWAYS if share.owns(g)}
    assert 0 < len(mine) < len(GATEWAYS)
    await share.renew()
    assert share.degraded and {g for g in GATEWAYS if share.owns(g)} == mine  # a short outage: keep the share
    now[0] = 3.5
    await share.renew()
    assert all(share.owns(g) for g in GATEWAYS) and "every gateway" in share.mode
    await gone.aclose()


def test_the_ring_is_the_same_in_every_process_and_balanced():
    ring = Ring(("a", "b", "c", "d"))
    assert ring.owner(point("gateway-1")) == Ring(("d", "c", "b", "a")).owner(point("gateway-1"))
    counts = {m: 0 for m in "abcd"}
    for g in GATEWAYS:
        counts[ring.owner(g)] += 1
    assert all(0.6 * len(GATEWAYS) / 4 < n < 1.4 * len(GATEWAYS) / 4 for n in counts.values()), counts
    other = subprocess.run([sys.executable, "-c", "from ngm.nodes.health.share import point; "
                            "print(point('gateway-1'))"], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert int(other.stdout) == point("gateway-1")  # not Python's hash(), which differs per process
