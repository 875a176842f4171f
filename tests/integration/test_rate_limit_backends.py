"""The memory backend and the Redis backend (its Lua script, on a real Redis) held to the same cases, with
the clock under the test's control (the script takes `now` from its caller when given)."""

import asyncio
import random
import shutil
import time
import uuid

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from ngm.dataplane.limits.algorithms import TOKEN_BUCKET, Scope
from ngm.dataplane.limits.limiter import _lines_template, _scope_lines, header_lines, headers_for
from ngm.dataplane.limits.memory import MemoryBackend
from ngm.dataplane.limits.pipe import Pipe
from ngm.dataplane.limits.redis_backend import RedisBackend
from tests.support.processes import REDIS_URL
from tests.support.redis_server import PrivateRedis
from tests.support.standin import closed_port

pytestmark = pytest.mark.anyio


class Driver:
    """check(scopes, at_ms) on either backend."""

    def __init__(self, kind: str, client=None):
        self.kind, self.now = kind, 0.0
        if kind == "memory":
            self.backend = MemoryBackend(lambda: self.now / 1000)
        else:
            self.backend = RedisBackend(client, f"ngm-test-{uuid.uuid4().hex[:8]}")

    async def check(self, scopes, at_ms, counter="gw", peek=False):
        self.now = at_ms
        if self.kind == "memory":
            return await self.backend.check(scopes, counter, peek)
        return await self.backend.check(scopes, counter, peek, now_ms=at_ms)


@pytest.fixture(params=["memory", "redis"])
async def driver(request):
    if request.param == "memory":
        yield Driver("memory")
        return
    client = aioredis.from_url(REDIS_URL)
    d = Driver("redis", client)
    yield d
    async for key in client.scan_iter(match=d.backend.prefix + "*"):
        await client.delete(key)
    await client.aclose()


async def test_sliding_window_edges(driver):
    scope = [Scope("gateway", "g", 5, 1000)]
    t0 = 1_700_000_000_000  # a window boundary
    allowed = [(await driver.check(scope, t0 + i))[0].allowed for i in range(6)]
    assert allowed == [True] * 5 + [False]
    refused = (await driver.check(scope, t0 + 10))[0]
    assert refused.retry_ms == 1000 - 10 + 1
    assert not (await driver.check(scope, t0 + 1000))[0].allowed  # the full window still weighs 5
    ok = (await driver.check(scope, t0 + 1001))[0]
    assert ok.allowed and ok.remaining == 0
    assert await driver.backend.rejections("gw") == {"gateway": 3}


async def test_refused_requests_count_in_no_scope(driver):
    wide, narrow = Scope("gateway", "g", 10, 1000), Scope("user", "u", 2, 1000)
    t0 = 1_700_000_000_000
    results = [await driver.check([wide, narrow], t0 + i) for i in range(5)]
    assert [r[1].allowed for r in results] == [True, True, False, False, False]
    assert all(r[0].allowed for r in results)  # the wide scope would have allowed them all...
    peek = (await driver.check([wide], t0 + 6, peek=True))[0]
    assert peek.used == 2 and peek.remaining == 8  # ...but counted only the two admitted
    assert (await driver.check([wide], t0 + 7, peek=True))[0].used == 2  # peeking counts nothing either


async def test_token_bucket_burst_then_steady_rate(driver):
    scope = [Scope("agent", "a", 10, 1000, TOKEN_BUCKET, burst=3)]
    t0 = 1_700_000_000_000
    assert [(await driver.check(scope, t0))[0].allowed for _ in range(4)] == [True, True, True, False]
    assert (await driver.check(scope, t0))[0].retry_ms == 100
    assert not (await driver.check(scope, t0 + 99))[0].allowed
    admitted = 0
    for ms in range(100, 2100, 10):  # 200 attempts over 2 s at 10 per second: 20 more
        admitted += (await driver.check(scope, t0 + ms))[0].allowed
    assert admitted == 20


async def test_redis_counts_are_exact_under_concurrent_callers():
    """50 callers at once through one script: never more than the limit admitted in the window."""
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=16))
    backend = RedisBackend(client, f"ngm-test-{uuid.uuid4().hex[:8]}")
    scopes = [Scope("gateway", "g", 100, 60_000), Scope("user", "u", 1000, 60_000)]
    try:
        t0 = 1_700_000_040_000  # all within one window
        results = await asyncio.gather(*(backend.check(scopes, "gw", now_ms=t0 + i % 50) for i in range(300)))
        assert sum(all(o.allowed for o in r) for r in results) == 100
        user = (await backend.check([scopes[1]], "gw", peek=True, now_ms=t0 + 60))[0]
        assert user.used == 100  # refused by the gateway scope: not counted for the user
    finally:
        async for key in client.scan_iter(match=backend.prefix + "*"):
            await client.delete(key)
        await client.aclose()


@pytest.mark.parametrize("path", ["pipe", "redis-py"])
async def test_redis_batches_concurrent_requests_and_decides_each_on_its_own(path):
    """Requests of one loop turn go as one script call; each is still all-or-nothing. Both ways to Redis:
    the pipelined connection (TCP) and redis-py (what TLS and unix sockets use)."""
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=4))
    backend = RedisBackend(client, f"ngm-test-{uuid.uuid4().hex[:8]}")
    assert backend._pipe is not None  # a TCP URL gets the pipe
    hour = 3_600_000  # a boundary mid-test changes nothing: the previous hour's count still weighs in full
    gateway = Scope("gateway", "g", 100, hour)
    users = [Scope("user", f"u{i % 3}", 40, hour) for i in range(300)]
    calls = 0
    if path == "pipe":
        original = backend._pipe.send

        def counting(command, on_reply=None):
            nonlocal calls
            calls += 1
            return original(command, on_reply)

        backend._pipe.send = counting
    else:
        backend._pipe = None
        original = backend._call

        async def counting(keys, args):
            nonlocal calls
            calls += 1
            return await original(keys, args)

        backend._call = counting
    try:
        results = await asyncio.gather(*(backend.check([gateway, users[i]], "gw") for i in range(300)))
        admitted = [i for i, r in enumerate(results) if all(o.allowed for o in r)]
        assert len(admitted) == 100
        per_user = [sum(1 for i in admitted if i % 3 == u) for u in range(3)]
        assert max(per_user) <= 40
        assert 0 < calls < 300 / 4  # batched: far fewer calls than requests
        rejected = await backend.rejections("gw")
        assert rejected["gateway"] == 200
        await client.script_flush()  # as after a Redis restart: NOSCRIPT, then the script is loaded again
        [refused, _] = await backend.check([gateway, users[0]], "gw")
        assert not refused.allowed and refused.used == 100
    finally:
        backend.close()
        async for key in client.scan_iter(match=backend.prefix + "*"):
            await client.delete(key)
        await client.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_one_script_call_decides_its_requests_as_the_memory_backend_does_one_by_one(seed):
    """A call reads each key once and writes it once at its end: every request of it must still see what the
    ones before it counted. Random requests over shared scopes (both algorithms, limits low enough to refuse,
    a window boundary crossed), three calls at a clock of the test's own, against the memory backend; half of
    them brief (the router's: an admitted one answers only its tightest scope), which must give the headers
    the memory backend's outcomes give."""
    rng = random.Random(seed)
    pool = [Scope("gateway", "g:w1000", 9, 1000), Scope("agent", "a:w1000", 6, 1000),
            Scope("user", "u1:w1000", 3, 1000), Scope("user", "u2:w1000", 4, 1000),
            Scope("agent", "a:t1000", 5, 1000, TOKEN_BUCKET, burst=2),
            Scope("user", "u1:t1000", 10, 1000, TOKEN_BUCKET)]
    client = aioredis.from_url(REDIS_URL)
    backend = RedisBackend(client, f"ngm-test-{uuid.uuid4().hex[:8]}")
    clock = [0.0]
    memory = MemoryBackend(lambda: clock[0] / 1000)
    t0 = 1_700_000_000_000 + 300
    try:
        for at in (t0, t0 + 450, t0 + 1250):
            batch = [(rng.sample(pool, rng.randint(1, 3)), rng.random() < 0.5) for _ in range(40)]
            keys, args = [], [repr(float(at))]
            for scopes, brief in batch:
                request = backend._request(scopes, "gw", False, brief)
                keys += request.keys
                args += request.args
            flat = await backend._call(keys, args)
            clock[0] = at
            i, briefly_admitted, refused = 0, 0, 0
            for scopes, brief in batch:
                expected = memory.check_now(scopes, "gw")
                refused += not all(o.allowed for o in expected)
                n = 5 * len(scopes)
                if not brief:
                    assert backend._outcomes(flat[i:i + n], False) == expected
                    i += n
                elif all(o.allowed for o in expected):
                    tightest, remaining, reset_ms = flat[i:i + 3]
                    assert (_scope_lines(_lines_template(scopes[tightest - 1], b"p"), remaining, reset_ms)
                            == header_lines(headers_for(scopes, expected, b"p")))
                    briefly_admitted += 1
                    i += 3
                else:
                    assert flat[i] == 0 and backend._outcomes(flat[i + 1:i + 1 + n], False) == expected
                    i += 1 + n
            assert i == len(flat) and briefly_admitted > 0 and refused > 0
        assert await backend.rejections("gw") == await memory.rejections("gw")
        for key in [k async for k in client.scan_iter(match=backend.prefix + "*")]:
            if not key.endswith(b":rejected:gw"):
                assert await client.pttl(key) > 0, key  # every count and bucket expires
    finally:
        async for key in client.scan_iter(match=backend.prefix + "*"):
            await client.delete(key)
        await client.aclose()


async def test_check_then_is_decided_with_the_checks_of_its_loop_turn_and_hears_of_failures():
    """The router's way without a coroutine: a function called with the result, in the same batch and
    order as the awaited checks beside it; and with the error when Redis cannot be reached."""
    client = aioredis.from_url(REDIS_URL)
    backend = RedisBackend(client, f"ngm-test-{uuid.uuid4().hex[:8]}")
    scope = [Scope("gateway", "g", 3, 3_600_000)]
    heard: dict[int, tuple] = {}
    try:
        awaited = []
        for i in range(8):  # alternating, all in one loop turn: 0, 2, 4, 6 awaited; 1, 3, 5, 7 by function
            if i % 2:
                backend.check_then(scope, "gw", lambda outcomes, error, i=i: heard.__setitem__(i, (outcomes, error)))
            else:
                awaited.append(asyncio.ensure_future(backend.check(scope, "gw")))
        results = await asyncio.gather(*awaited)
        assert sorted(heard) == [1, 3, 5, 7] and all(error is None for _, error in heard.values())
        # the first three to arrive, none more: check_then queues at the call, check when its task first runs;
        # an admitted one by function hears (its tightest scope, remaining, ms to reset), a refused one Outcomes
        assert [r[0].allowed for r in results] == [False] * 4  # 0, 2, 4, 6
        assert [heard[i][0][:2] for i in (1, 3, 5)] == [(0, 2), (0, 1), (0, 0)]
        assert all(0 < heard[i][0][2] <= 3_600_000 for i in (1, 3, 5))
        [refused] = heard[7][0]
        assert not refused.allowed and refused.used == 3 and refused.retry_ms > 0
    finally:
        backend.close()
        async for key in client.scan_iter(match=backend.prefix + "*"):
            await client.delete(key)
        await client.aclose()

    dead = aioredis.from_url(f"redis://127.0.0.1:{closed_port()}")
    backend = RedisBackend(dead, "ngm-test-dead")
    answered = asyncio.get_running_loop().create_future()
    backend.check_then(scope, "gw", lambda outcomes, error: answered.set_result((outcomes, error)))
    outcomes, error = await asyncio.wait_for(answered, 2)
    assert outcomes is None and isinstance(error, ConnectionError)
    backend.close()
    await dead.aclose()


async def test_the_pipe_fails_fast_on_a_silent_or_missing_redis_and_connects_again():
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = silent.sockets[0].getsockname()[1]
    pipe = Pipe("127.0.0.1", port, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await pipe.call("PING")
    assert 0.15 < time.monotonic() - started < 3.0  # the silent server never answers: the timeout did this
    silent.close()
    await silent.wait_closed()
    pipe.port = closed_port()
    with pytest.raises(ConnectionError):
        await pipe.call("PING")


    async def garbage(reader, writer):
        await reader.read(100)
        writer.write(b"!not RESP\r\n")
        await writer.drain()

    babbler = await asyncio.start_server(garbage, "127.0.0.1", 0)
    pipe.port = babbler.sockets[0].getsockname()[1]
    with pytest.raises(ConnectionError, match="protocol error"):
        await pipe.call("PING")
    babbler.close()
    pipe.host, pipe.port = REDIS_URL.split("//")[1].split("/")[0].split(":")
    pipe.port = int(pipe.port)
    assert await asyncio.gather(pipe.call("PING"), pipe.call("ECHO", "x")) == [b"PONG", b"x"]  # in order
    pipe.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("stall", ["before the write", "after the write"])
def test_a_stalled_event_loop_is_not_taken_for_a_silent_redis(loop_factory, stall):
    """A long callback, a GC pause or a descheduled process keeps the loop from reading a reply that Redis
    sent in time. Stalled before the write, the watchdog's timer comes before the socket is read when the
    loop runs again (the watchdog's second look is for this: without it both loops fail). Stalled after the
    write, the reply is read first; that case pins that a reply read late is not judged by when it was read."""
    host, port = REDIS_URL.split("//")[1].split("/")[0].split(":")

    async def stalled_call():
        pipe = Pipe(host, int(port), timeout=0.2)
        assert await pipe.call("PING") == b"PONG"  # connected
        reply = pipe.call("ECHO", "still here")  # written by a callback the call queued
        if stall == "before the write":
            time.sleep(0.4)  # the loop is blocked for twice the timeout
        else:  # queued behind the write, so it runs before the loop reads the socket again
            asyncio.get_running_loop().call_soon(time.sleep, 0.4)
        try:
            return await reply
        finally:
            pipe.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(stalled_call()) == b"still here"


async def test_after_a_stall_a_silent_redis_is_still_found_out_within_a_timeout():
    """A blocked loop gives the command a whole timeout from when the loop runs again, not forever."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    pipe = Pipe("127.0.0.1", silent.sockets[0].getsockname()[1], timeout=0.2)
    try:
        reply = pipe.call("PING")
        time.sleep(0.4)  # blocked past the timeout before the command is even written
        resumed = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await reply
        assert 0.15 < time.monotonic() - resumed < 2.0  # a timeout after the loop ran again, not the stall's
    finally:
        pipe.close()
        silent.close()
        await silent.wait_closed()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_the_pipe_signs_in_and_selects_the_database_of_the_url():
    redis = PrivateRedis(password="s3cret-pw", db=3)
    client = aioredis.from_url(redis.url)
    backend = RedisBackend(client, "ngm-test-auth")
    try:
        assert backend._pipe is not None and (backend._pipe.db, backend._pipe.password) == (3, "s3cret-pw")
        scope = [Scope("gateway", "g", 2, 60_000)]
        assert [(await backend.check(scope, "gw"))[0].allowed for _ in range(3)] == [True, True, False]
        assert await client.keys("ngm-test-auth:rl:g:*") != []  # in database 3, where the URL says
        db0 = aioredis.from_url(redis.url.rsplit("/", 1)[0] + "/0")
        assert await db0.keys("ngm-test-auth:rl:*") == []
        await db0.aclose()

        wrong = aioredis.from_url(redis.url.replace("s3cret-pw", "wrong"))
        refused = RedisBackend(wrong, "ngm-test-auth")
        with pytest.raises(RedisError):  # the limiter takes it for Redis down: its failure policy applies
            await refused.check(scope, "gw")
        refused.close()
        await wrong.aclose()
    finally:
        backend.close()
        await client.aclose()
        redis.kill()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_the_pipe_speaks_tls_to_a_rediss_url_and_checks_the_certificate_as_the_url_says():
    from ngm.dataplane.limits.limiter import Limits, RateLimiter
    from ngm.nodes.auth.keys import Principal

    redis = PrivateRedis(tls=True)
    trusting = aioredis.from_url(redis.url + "?ssl_cert_reqs=none")  # a self-signed certificate, taken as is
    checking = aioredis.from_url(redis.url)  # the default: verified against the system's CAs, which refuse it
    backend, strict = RedisBackend(trusting, "ngm-test-tls"), RedisBackend(checking, "ngm-test-tls")
    try:
        assert backend._pipe is not None and backend._pipe.tls is not None and backend.connection == "pipelined, TLS"
        scope = [Scope("gateway", "g", 2, 60_000)]
        assert [(await backend.check(scope, "gw"))[0].allowed for _ in range(3)] == [True, True, False]
        assert await trusting.keys("ngm-test-tls:rl:g:*") != []  # counted in that Redis, over TLS
        with pytest.raises(ConnectionError, match="SSLCertVerificationError"):  # not talked to, unverified
            await strict.check(scope, "gw")
        # and the limiter says so and decides locally (fail open), as for any Redis it cannot use
        limiter = RateLimiter(strict, redis=checking, namespace="ngm-test-tls")
        await limiter.check(Principal("org", "org_member", "key"), Limits(global_limit=5), "gw", "bot", None, False)
        status = limiter.status()
        assert (status["mode"], status["connection"]) == ("local", "pipelined, TLS") and status["redis_failures"] == 1
    finally:
        backend.close()
        strict.close()
        await trusting.aclose()
        await checking.aclose()
        redis.kill()
