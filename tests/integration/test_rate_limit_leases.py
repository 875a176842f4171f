"""Leases of quota (ngm/dataplane/limits/leases.py): the router's limiter with the Redis backend on a real Redis,
one or two of them as instances, and the lease bookkeeping alone on an event loop."""

import asyncio
import re
import time
import uuid
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from ngm.dataplane.limits.algorithms import Scope
from ngm.dataplane.limits.leases import LEASE_MIN, LEASE_SECONDS, Leases
from ngm.dataplane.limits.limiter import Limits, RateLimited, RateLimiter
from ngm.dataplane.limits.redis_backend import RedisBackend
from tests.support.processes import REDIS_URL
from tests.support.waiting import room_in_window

pytestmark = pytest.mark.anyio
CALLER = SimpleNamespace(key_id="k1", rate_limit=None)  # what the limiter reads of a principal


async def check(limiter: RateLimiter, limits: Limits) -> int | None:
    """One request through the router's check: the remaining it is told when admitted, None when refused."""
    answer = asyncio.get_running_loop().create_future()
    try:
        lines = limiter.check_then(CALLER, limits, "gw", "agent", None, False,
                                   lambda lines, error: answer.set_result((lines, error)))
        if lines is None:
            lines, error = await answer
            if error is not None:
                raise error
    except RateLimited as refused:
        assert refused.status == 429
        return None
    return int(re.search(rb"x-ratelimit-remaining: (\d+)", lines).group(1))


@pytest.fixture
async def instances():
    """make(n) -> n limiters sharing one Redis namespace, each having announced itself (live instances)."""
    client = aioredis.from_url(REDIS_URL)
    namespace = f"ngm-test-{uuid.uuid4().hex[:8]}"
    made = []

    async def make(n: int) -> list[RateLimiter]:
        for i in range(n):
            made.append(RateLimiter(RedisBackend(client, namespace), instance=f"i{i}", redis=client,
                                    namespace=namespace))
            await made[-1]._beat()
        for limiter in made:
            await limiter._beat()  # each counts the others
        return made

    yield make
    for limiter in made:
        limiter.shared.close()
    async for key in client.scan_iter(match=namespace + "*"):
        await client.delete(key)
    await client.aclose()


async def until(probe, what: str, equals=True, timeout: float = 10.0):
    """Poll `probe` (a function, its result awaited when it is a coroutine) until it equals `equals`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value == equals:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.02)


async def used_in_redis(limiter: RateLimiter, limit: int) -> int:
    [outcome] = await limiter.shared.check([Scope("gateway", "g:gw:w60000", limit, 60_000)], "gw", peek=True)
    return outcome.used


async def test_one_instance_leases_quota_and_tells_each_request_what_remains_as_one_by_one(instances):
    [limiter] = await instances(1)
    limits = Limits(global_limit=300, window_ms=60_000)
    room_in_window(60, room=5)
    told = [await check(limiter, limits) for _ in range(320)]
    assert told == [299 - i for i in range(300)] + [None] * 20  # exact, remaining as without leases
    assert limiter.leases.granted >= 2
    # leases stop where what is left, shared by LEASE_SHARE, is under LEASE_MIN: the rest went one by one
    assert limiter.counters["decided_locally"] == 0 and limiter.redis_up
    await until(lambda: used_in_redis(limiter, 300), "the leases' unused units to be given back", equals=300)


async def test_unused_units_are_given_back_when_the_lease_ends(instances):
    [limiter] = await instances(1)
    limits = Limits(global_limit=1_000_000, window_ms=60_000)
    room_in_window(60, room=5)
    returns, give_back = [], limiter.leases.give_back
    limiter.leases.give_back = lambda *args: returns.append(args)  # held here until the counts are read
    admitted = round_trips = unused = 0
    for _ in range(10):  # bursts of 100 in one loop turn, until a lease is left with units unused
        pending = []
        for _ in range(100):
            answer = asyncio.get_running_loop().create_future()
            lines = limiter.check_then(CALLER, limits, "gw", "agent", None, False,
                                       lambda lines, error, answer=answer: answer.set_result(lines))
            if lines is None:
                pending.append(answer)
        round_trips += len(pending)
        await asyncio.gather(*pending)
        admitted += 100
        unused = sum(h.units for h in limiter.leases.held.values() if h.units > 0) + sum(u for *_, u in returns)
        if admitted >= 300 and unused > 0:
            break
    assert limiter.leases.granted >= 1 and round_trips < admitted - LEASE_MIN and unused > 0
    # counted as taken: Redis holds every admitted request and every leased unit not given back yet
    assert await used_in_redis(limiter, 1_000_000) == admitted + unused
    await until(lambda: all(h.units <= 0 for h in limiter.leases.held.values()), "the leases to end")
    assert sum(units for _, _, units in returns) == limiter.leases.given_back == unused
    for args in returns:
        give_back(*args)
    await until(lambda: used_in_redis(limiter, 1_000_000), "the unused units to be given back", equals=admitted)


async def test_two_instances_hammering_admit_exactly_the_limit(instances):
    a, b = await instances(2)
    assert a.leases.share == b.leases.share == 8  # a lease takes at most 1/(4 x 2) of what is left
    limits = Limits(global_limit=2000, per_user=5000, window_ms=60_000)
    room_in_window(60, room=10)

    async def hammer(limiter: RateLimiter) -> list:
        told = []
        for _ in range(50):  # waves of 50 requests at once
            told += await asyncio.gather(*(check(limiter, limits) for _ in range(50)))
        return told

    told_a, told_b = await asyncio.gather(hammer(a), hammer(b))
    admitted = [r for r in told_a + told_b if r is not None]
    assert len(admitted) == 2000  # none over, none short, out of 5000
    assert a.leases.granted > 0 and b.leases.granted > 0
    await until(lambda: used_in_redis(a, 2000), "the leases' unused units to be given back", equals=2000)


# ---------------------------------------------------------------- the bookkeeping alone

KEYS, LIMITS = ("g", "u"), (1000, 50)


def fresh_slot() -> None:
    """Sleep to the start of a span in which demand is counted (a test's requests all count in one)."""
    time.sleep(LEASE_SECONDS - time.monotonic() % LEASE_SECONDS + 0.002)


async def test_a_lease_ends_with_its_life_or_its_window_and_a_changed_limit_does_not_use_it():
    returned = []
    leases = Leases(lambda key, index, units: returned.append((key, index, units)))
    fresh_slot()
    for _ in range(LEASE_MIN):
        assert leases.admit(KEYS, LIMITS) is None  # no lease yet: demand counted
    wishes = leases.wishes(KEYS)
    assert wishes == (LEASE_MIN, LEASE_MIN) and leases.wishes(KEYS) is None  # one ask at a time
    # granted: the gateway 5 units (its window ends in 40 ms), the user 3
    leases.granted_in(KEYS, LIMITS, wishes, [5, 900, 77, 40, 3, 40, 77, 5000], time.monotonic())
    assert leases.admit(KEYS, LIMITS)[:2] == (1, 39)  # the user's is the tightest: 40 remained, now 39
    assert leases.admit(KEYS, (999, 50)) is None  # the gateway's limit changed: not under the old lease
    assert leases.admit(KEYS, LIMITS)[:2] == (1, 38)
    time.sleep(0.05)  # the gateway's window has ended, and its lease with it, though the loop (blocked) has
    assert leases.admit(KEYS, LIMITS) is None  # not yet run the lease's timer
    assert returned == []
    await asyncio.sleep(0.01)
    assert returned == [("g", 77, 3)] and leases.given_back == 3  # given back to the window it was counted in
    await asyncio.sleep(LEASE_SECONDS)
    assert returned == [("g", 77, 3), ("u", 77, 1)]


async def test_no_lease_is_asked_for_below_the_least_demand_nor_again_soon_after_none_was_granted():
    leases = Leases(lambda *_: None)
    fresh_slot()
    for _ in range(LEASE_MIN - 1):
        leases.admit(KEYS, LIMITS)
    assert leases.wishes(KEYS) is None
    leases.admit(KEYS, LIMITS)
    wishes = leases.wishes(KEYS)
    assert wishes is not None
    leases.granted_in(KEYS, LIMITS, wishes, [0, 10, 0, 500, 0, 10, 0, 500], time.monotonic())  # none granted
    assert leases.wishes(KEYS) is None and leases.granted == 0

    def ask_after_quiet() -> tuple | None:
        time.sleep(LEASE_SECONDS)  # past the quiet time
        fresh_slot()  # demand counted in a span of its own
        for _ in range(LEASE_MIN):
            leases.admit(KEYS, LIMITS)
        return leases.wishes(KEYS)

    wishes = ask_after_quiet()
    assert wishes is not None  # asks again once the quiet time is over
    leases.granted_in(KEYS, LIMITS, wishes, None, time.monotonic())  # the ask failed (Redis did not answer)
    assert leases.granted == 0 and leases.wishes(KEYS) is None  # no lease, and quiet again...
    assert ask_after_quiet() is not None  # ...but not stuck asking: it asks again after


async def test_an_instance_that_stops_gives_its_unused_units_back(instances):
    [limiter] = await instances(1)
    limits = Limits(global_limit=1_000_000, window_ms=60_000)
    room_in_window(60, room=5)
    for _ in range(40):
        await check(limiter, limits)
    assert limiter.leases.granted >= 1
    assert await used_in_redis(limiter, 1_000_000) > 40  # a lease's units, not all used yet
    await limiter.stop()  # at once, long before the lease would end
    assert await used_in_redis(limiter, 1_000_000) == 40
