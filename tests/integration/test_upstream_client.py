"""The router's HTTP/1.1 client against scripted servers: every protocol case it must handle."""

import asyncio
import time

import pytest

from ngm.dataplane.upstream import PoolBusy, UpstreamBroken, UpstreamPool, UpstreamTimeout, UpstreamUnreachable
from ngm.nodes.outbound.policy import OutboundPolicy
from tests.support.scripted import ScriptedServer, ok
from tests.support.standin import StandIn, closed_port

pytestmark = pytest.mark.anyio
HEAD = b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n"


@pytest.fixture
async def pool():
    p = UpstreamPool(OutboundPolicy())
    yield p
    await p.close()


@pytest.fixture
def servers():
    made = []

    def make(script):
        made.append(ScriptedServer(script))
        return made[-1]

    yield make
    for s in made:
        s.stop()


async def fetch(pool, port, head=HEAD, body=b"", **kw):
    response = await pool.request("http", "127.0.0.1", port, head, body, **kw)
    data = b"".join([chunk async for chunk in read_all(response)])
    response.release()
    return response, data


async def read_all(response):
    """The body as the router reads it."""
    while True:
        chunk = response.read_nowait()
        if chunk is None:
            await response.wait()
        elif not chunk:
            return
        else:
            yield chunk


async def test_keep_alive_connections_are_reused(pool, servers):
    s = servers(lambda head, n: [ok(b"one")])
    for _ in range(5):
        response, data = await fetch(pool, s.port)
        assert (response.status, data) == (200, b"one")
    assert s.connections == 1 and len(s.requests) == 5


async def test_request_bodies_and_headers_arrive_intact(pool, servers):
    s = servers(lambda head, n: [ok()])
    head = b"POST /p?q=1 HTTP/1.1\r\nhost: test\r\ncontent-length: 11\r\nx-thing: a b\r\n\r\n"
    await fetch(pool, s.port, head, b"hello world")
    assert s.requests[0] == head + b"hello world"


async def test_chunked_and_close_delimited_bodies(pool, servers):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    s = servers(lambda head, n: [chunked])
    assert (await fetch(pool, s.port))[1] == b"hello world"
    closing = servers(lambda head, n: [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", "close"])
    response, data = await fetch(pool, closing.port)
    assert data == b"until the end"
    await fetch(pool, closing.port)
    assert closing.connections == 2  # not reused after Connection: close


async def test_head_and_204_have_no_body(pool, servers):
    s = servers(lambda head, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"])
    response, data = await fetch(pool, s.port, b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n", head_only=True)
    assert (response.status, data) == (200, b"")
    s204 = servers(lambda head, n: [b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert (await fetch(pool, s204.port))[0].status == 204
    assert (await fetch(pool, s204.port))[0].status == 204 and s204.connections == 1


async def test_a_head_answer_does_not_spoil_the_next_answer_on_the_same_connection(pool, servers):
    s = servers(lambda head, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + (b"" if head.startswith(b"HEAD")
                                                                                else b"hello")])
    assert (await fetch(pool, s.port, b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n", head_only=True))[1] == b""
    assert (await fetch(pool, s.port))[1] == b"hello"
    assert (await fetch(pool, s.port))[1] == b"hello" and s.connections == 1


async def test_interim_answers_are_skipped(pool, servers):
    s = servers(lambda head, n: [b"HTTP/1.1 100 Continue\r\n\r\n", 0.02, ok(b"final")])
    response, data = await fetch(pool, s.port)
    assert (response.status, data) == (200, b"final")
    assert (await fetch(pool, s.port))[1] == b"final" and s.connections == 1


async def test_a_stale_keep_alive_connection_is_replaced_transparently(pool, servers):
    s = servers(lambda head, n: [ok(b"first"), "close"] if n == 1 else [ok(b"fresh")])
    assert (await fetch(pool, s.port))[1] == b"first"
    await asyncio.sleep(0.1)
    assert (await fetch(pool, s.port))[1] == b"fresh"


async def test_closed_before_answering_is_unreachable_and_so_is_a_closed_port(pool, servers):
    s = servers(lambda head, n: ["close"])
    with pytest.raises(UpstreamUnreachable):
        await fetch(pool, s.port)
    with pytest.raises(UpstreamUnreachable):
        await fetch(pool, closed_port())


async def test_a_break_during_the_answer_is_broken_not_unreachable(pool, servers):
    s = servers(lambda head, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", 0.05, "close"])
    response = await pool.request("http", "127.0.0.1", s.port, HEAD, b"")
    with pytest.raises(UpstreamBroken):
        async for _ in read_all(response):
            pass
    response.release()


async def test_timeout_waiting_for_the_answer(pool, servers):
    s = servers(lambda head, n: ["hold"])
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await fetch(pool, s.port, timeout=0.3)
    assert time.monotonic() - start < 3.0  # the answer never comes: without the deadline this never ends


async def test_each_exchange_on_a_reused_connection_gets_its_own_deadline(pool, servers):
    # the first answers at once, later ones hold: one timer per connection must time each from its start
    s = servers(lambda head, n: [ok(b"first")] if b"/first" in head else ["hold"] if b"/hold" in head
                else [0.5, ok(b"slow")])
    await fetch(pool, s.port, head=b"GET /first HTTP/1.1\r\nhost: test\r\n\r\n", timeout=0.6)
    await asyncio.sleep(0.4)  # the first exchange's deadline passes 0.2 s into the next one
    response, data = await fetch(pool, s.port, head=b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n", timeout=5.0)
    assert data == b"slow" and s.connections == 1  # not cut at the first exchange's deadline
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # a deadline sooner than the one the timer waits for still counts
        await fetch(pool, s.port, head=b"GET /hold HTTP/1.1\r\nhost: test\r\n\r\n", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2.5  # not the 5 s deadline the connection's timer was set for


async def test_large_answers_stream_with_back_pressure(pool, servers):
    chunk = b"x" * 65536
    s = servers(lambda head, n: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (200 * len(chunk))]
                + [chunk] * 200)
    response = await pool.request("http", "127.0.0.1", s.port, HEAD, b"")
    received, peak = 0, 0
    async for part in read_all(response):
        received += len(part)
        peak = max(peak, len(response.chunks))
        await asyncio.sleep(0)  # a slow reader
    response.release()
    assert received == 200 * len(chunk) and peak <= 40


async def test_blocked_addresses_are_never_connected(pool):
    with pytest.raises(UpstreamUnreachable, match="link-local or metadata"):
        await pool.request("http", "169.254.169.254", 80, HEAD, b"", timeout=1)


async def test_a_confined_pool_refuses_names_before_looking_them_up_and_addresses_outside(monkeypatch, servers):
    looked_up = []
    real = asyncio.get_running_loop().getaddrinfo

    async def recording(host, *args, **kwargs):
        looked_up.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", recording)
    confined = UpstreamPool(OutboundPolicy.from_setting("", "127.0.0.0/8"))
    s = servers(lambda head, n: [ok(b"here")])
    try:
        with pytest.raises(UpstreamUnreachable, match="NGM_OUTBOUND_ONLY"):
            await confined.request("http", "gw.example.com", 80, HEAD, b"", timeout=1)
        with pytest.raises(UpstreamUnreachable, match="outside NGM_OUTBOUND_ONLY"):
            await confined.request("http", "10.255.255.1", 9, HEAD, b"", timeout=1)
        answer = await confined.request("http", "localhost", s.port, HEAD, b"", timeout=3)
        assert answer.status == 200
        answer.release()
    finally:
        await confined.close()
    assert looked_up == ["10.255.255.1", "localhost"]  # a literal is looked up in no DNS; the name never was


async def test_tls_to_an_untrusted_certificate_fails_to_connect(pool):
    server = StandIn(tls=True)
    try:
        with pytest.raises(UpstreamUnreachable):
            await pool.request("https", "127.0.0.1", server.port, HEAD, b"", timeout=3)
    finally:
        server.stop()


async def test_many_concurrent_requests_share_the_pool(pool, servers):
    s = servers(lambda head, n: [0.01, ok(b"ok")])
    results = await asyncio.gather(*(fetch(pool, s.port) for _ in range(50)))
    assert all(data == b"ok" for _, data in results) and s.connections <= 50
    await asyncio.gather(*(fetch(pool, s.port) for _ in range(50)))
    assert s.connections <= 50  # the second wave reuses the first wave's connections


async def test_open_connections_per_gateway_are_capped_and_requests_beyond_wait_their_turn(servers):
    capped = UpstreamPool(OutboundPolicy(), max_open_per_origin=2)
    s = servers(lambda head, n: [0.3, ok(b"done")])  # each answer takes 0.3 s
    try:
        answers = await asyncio.gather(*(fetch(capped, s.port, timeout=10.0) for _ in range(6)))
        assert [data for _, data in answers] == [b"done"] * 6
        assert s.most_open == 2 and s.connections == 2  # the waiting requests took the two kept-alive ones
        # a wait longer than a request's own deadline ends it as a timeout; the requests holding them are served
        slow = servers(lambda head, n: [1.0, ok(b"late")])
        started = time.monotonic()
        outcomes = await asyncio.gather(*(fetch(capped, slow.port, timeout=t) for t in (5.0, 5.0, 0.4, 0.4)),
                                        return_exceptions=True)
        assert [o[1] for o in outcomes[:2]] == [b"late", b"late"]
        assert [type(o) for o in outcomes[2:]] == [PoolBusy] * 2  # an UpstreamTimeout the circuit is not told of
        assert str(outcomes[2]) == f"2 connections to 127.0.0.1:{slow.port} busy for 0.4 s"
        assert slow.most_open == 2 and time.monotonic() - started < 5.0
        # a connection that closes makes room as well
        closing = servers(lambda head, n: [0.2, ok(b"bye", b"connection: close\r\n"), "close"])
        answers = await asyncio.gather(*(fetch(capped, closing.port, timeout=10.0) for _ in range(4)))
        assert [data for _, data in answers] == [b"bye"] * 4 and closing.most_open <= 2 and closing.connections == 4
    finally:
        await capped.close()


@pytest.mark.parametrize("handed", ["slot", "connection"])
async def test_a_turn_given_up_as_it_is_handed_over_is_given_back(handed):
    """A connection closing (or given back) in the loop turn the waiting request's deadline passes: the request
    times out, and what was handed to it goes back to the pool rather than being lost (the pool once leaked a
    slot each time, until a gateway took no request at all)."""
    from ngm.dataplane.upstream import _Connection

    loop = asyncio.get_running_loop()
    pool = UpstreamPool(OutboundPolicy(), max_open_per_origin=1)
    key = ("http", "127.0.0.1", 9)
    pool._per_origin[key] = 1  # one request holds the only connection
    deadline = loop.time() + 0.2
    if handed == "slot":
        loop.call_at(deadline, pool._closed, key)  # its connection closes as the deadline passes
    else:
        conn = _Connection(pool, key, loop)
        conn.transport, conn.closed = None, False
        loop.call_at(deadline, pool._idle_push, conn)  # its connection is given back as the deadline passes
    with pytest.raises(PoolBusy):
        await pool._room(key, deadline, 0.2)
    if handed == "slot":
        assert pool._per_origin.get(key, 0) == 0  # nothing open, nothing counted
    else:
        assert pool._per_origin[key] == 1 and pool._idle[key] == [conn]  # kept for the next request
    assert pool._queued == {}
