"""The agent traffic protocol byte by byte, as uvicorn tests its own protocols: a mock transport, bytes in through
data_received, bytes out in the transport's buffer. It extends uvicorn's HttpToolsProtocol, so a uvicorn update
that changes what it relies on shows here: pipelining, partial reads, malformed requests, upgrades, the hand-over
between the router and the ASGI app."""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from ngm.dataplane.keys import KeyCache
from ngm.dataplane.protocol import AgentTraffic, agent_traffic_protocol
from ngm.nodes.auth.keys import Principal, hash_api_key

pytestmark = pytest.mark.anyio
KEY = "ngm_" + "k" * 43
INVOKE = b"/api/v1/agents/bot/invoke/workflows/chat/execute"


class MockTransport:
    """What uvicorn's protocol uses of an asyncio transport (as uvicorn's tests/protocols/test_http.py has it)."""

    def __init__(self):
        self.buffer, self.closed, self.read_paused = b"", False, False

    def get_extra_info(self, key):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 8001), "sslcontext": False}.get(key)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.buffer += data

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class EchoRouter:
    """Stands in for the router: answers each invoke request with what it received."""

    def __init__(self):
        self.requests: list[tuple[str, bytes, bytes]] = []
        self.headers: list[list[tuple[bytes, bytes]]] = []  # each request's, as the router would forward them

    def forward_now(self, request, principal, request_id, body, owner):
        return self._answer(request, body)

    async def forward(self, request, principal, request_id):
        await self._answer(request, await request.read_body())

    async def _answer(self, request, body: bytes) -> None:
        self.requests.append((request.method, request.target, body))
        self.headers.append(list(request.headers))
        data = b"%s %s %d" % (request.method_bytes, request.target, len(body))
        request.start(200, [b"content-length: %d\r\n" % len(data)], True)
        request.write(data, last=True)


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"asgi"})


async def known_key(digest: str) -> Principal | None:
    return Principal("org", "org_member", "key-1", "caller") if digest == hash_api_key(KEY) else None


@pytest.fixture
def connect():
    made = []

    def make():
        router = EchoRouter()
        traffic = AgentTraffic(KeyCache(known_key), router)
        config = Config(app=asgi_app, lifespan="off", ws="none", log_level="critical")
        protocol = agent_traffic_protocol(traffic)(config=config, server_state=ServerState(), app_state={},
                                                   _loop=asyncio.get_running_loop())
        transport = MockTransport()
        protocol.connection_made(transport)
        made.append(protocol)
        return protocol, transport, router

    yield make
    for protocol in made:
        protocol.connection_lost(None)


def request(path: bytes = INVOKE, method: bytes = b"GET", body: bytes = b"", headers: bytes = b"") -> bytes:
    length = b"content-length: %d\r\n" % len(body) if body or method == b"POST" else b""
    return b"%s %s HTTP/1.1\r\nhost: ngm\r\nx-api-key: %s\r\n%s%s\r\n%s" % (method, path, KEY.encode(), length,
                                                                            headers, body)


async def settle(transport: MockTransport, answers: int) -> list[bytes]:
    """The answers written so far, once `answers` of them are complete (each has a content-length)."""
    for _ in range(200):
        found = split_answers(transport.buffer)
        if len(found) >= answers:
            return found
        await asyncio.sleep(0.005)
    raise AssertionError(f"expected {answers} answers, got: {transport.buffer!r}")


def split_answers(data: bytes) -> list[bytes]:
    out = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            break
        out.append(head + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return out


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_an_invoke_request_reaches_the_router_and_its_answer_the_caller(connect):
    protocol, transport, router = connect()
    protocol.data_received(request(method=b"POST", body=b'{"x": 1}'))
    [answer] = await settle(transport, 1)
    assert status_and_body(answer) == (200, b"POST /workflows/chat/execute 8")
    assert router.requests == [("POST", b"/workflows/chat/execute", b'{"x": 1}')]
    assert not transport.closed


async def test_pipelined_requests_are_answered_in_order_on_one_connection(connect):
    protocol, transport, router = connect()
    protocol.data_received(request(INVOKE + b"?n=1") + request(b"/elsewhere") + request(INVOKE + b"?n=3",
                                                                                         b"POST", b"abc"))
    answers = await settle(transport, 3)
    assert [status_and_body(a) for a in answers] == [(200, b"GET /workflows/chat/execute?n=1 0"), (200, b"asgi"),
                                                     (200, b"POST /workflows/chat/execute?n=3 3")]
    assert len(router.requests) == 2 and not transport.closed


async def test_a_request_arriving_byte_by_byte_is_answered_once_whole(connect):
    protocol, transport, router = connect()
    for byte in request(method=b"POST", body=b"0123456789"):
        protocol.data_received(bytes([byte]))
    [answer] = await settle(transport, 1)
    assert status_and_body(answer) == (200, b"POST /workflows/chat/execute 10")
    assert router.requests == [("POST", b"/workflows/chat/execute", b"0123456789")]


@pytest.mark.parametrize("malformed", [
    b"NOT A REQUEST\r\n\r\n",
    b"GET " + INVOKE + b" HTTP/1.1\r\nhost: ngm\r\ncontent-length: abc\r\n\r\n",
    b"GET " + INVOKE + b" HTTP/1.1\r\nhost: ngm\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy",
    b"GET " + INVOKE + b" HTTP/1.1\r\nbad header line\r\n\r\n",
])
async def test_a_malformed_request_gets_400_and_the_connection_closes(connect, malformed):
    protocol, transport, router = connect()
    protocol.data_received(malformed)
    await asyncio.sleep(0.01)
    assert transport.buffer.startswith(b"HTTP/1.1 400 ") and transport.closed
    assert router.requests == []


async def test_an_upgrade_request_is_not_forwarded(connect):
    protocol, transport, router = connect()
    protocol.data_received(request(headers=b"connection: upgrade\r\nupgrade: websocket\r\n"
                                           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           b"sec-websocket-version: 13\r\n"))
    [answer] = await settle(transport, 1)
    assert status_and_body(answer) == (200, b"asgi")  # the ASGI app's (here without a WebSocket library)
    assert router.requests == []  # WebSockets are not routed


async def test_refusals_on_the_connection_name_their_reason_and_keep_it_open(connect):
    protocol, transport, router = connect()
    protocol.data_received(request(b"/api/v1/agents/bot/invoke/a/%2e%2e/b")
                           + request(headers=b"authorization: Bearer " + KEY.encode() + b"\r\n")
                           + request().replace(KEY.encode(), b"ngm_" + b"x" * 43))
    answers = await settle(transport, 3)
    assert [status_and_body(a)[0] for a in answers] == [400, 401, 401]
    assert b"invalid_path" in answers[0] and b"conflicting_credentials" in answers[1]
    assert b"invalid or revoked API key" in answers[2]
    assert router.requests == [] and not transport.closed


async def test_answers_to_head_carry_no_body_whether_refused_or_forwarded(connect):
    """A body after a HEAD answer would be read as the start of the next answer on the connection."""
    protocol, transport, router = connect()
    protocol.data_received(request(method=b"HEAD").replace(KEY.encode(), b"ngm_" + b"x" * 43)
                           + request(method=b"HEAD") + request())
    for _ in range(200):
        if transport.buffer.endswith(b"GET /workflows/chat/execute 0"):
            break
        await asyncio.sleep(0.005)
    answers = [b"HTTP/1.1 " + a for a in transport.buffer.split(b"HTTP/1.1 ")[1:]]
    assert [a.split(b" ", 2)[1] for a in answers] == [b"401", b"200", b"200"], transport.buffer
    assert answers[0].endswith(b"\r\n\r\n") and answers[1].endswith(b"\r\n\r\n")  # heads alone
    assert b"content-length: 30" in answers[1].lower()  # what a GET would have had: HEAD says so, sends none
    assert answers[2].endswith(b"\r\n\r\nGET /workflows/chat/execute 0") and not transport.closed
    assert [r[0] for r in router.requests] == ["HEAD", "GET"]


async def test_a_chunked_body_s_trailers_are_not_headers(connect):
    protocol, transport, router = connect()
    head = (b"POST " + INVOKE + b" HTTP/1.1\r\nhost: ngm\r\nx-api-key: " + KEY.encode()
            + b"\r\ntransfer-encoding: chunked\r\n\r\n")
    # a second key and an extra header as trailers: neither a conflicting credential nor forwarded
    protocol.data_received(head + b"3\r\nabc\r\n0\r\nx-api-key: " + KEY.encode() + b"\r\nx-late: yes\r\n\r\n")
    [answer] = await settle(transport, 1)
    assert status_and_body(answer) == (200, b"POST /workflows/chat/execute 3")
    names = [name for name, _ in router.headers[0]]
    assert b"x-late" not in names and names.count(b"x-api-key") == 1


@pytest.mark.parametrize("path", [INVOKE, b"/api/v1/gateways"])
async def test_a_head_that_keeps_growing_is_refused_431_before_it_fills_memory(connect, path):
    protocol, transport, router = connect()
    protocol.data_received(b"GET " + path + b" HTTP/1.1\r\nhost: ngm\r\nx-filler: ")
    for _ in range(100):  # 100 x 1 KB of one header value, never ended
        protocol.data_received(b"a" * 1024)
        if transport.closed:
            break
    assert transport.closed and transport.buffer.startswith(b"HTTP/1.1 431 ")
    assert b"head_too_large" in transport.buffer and router.requests == []
    small = connect()  # a head of 60 KB still goes through
    small[0].data_received(request(headers=b"x-filler: " + b"a" * 60_000 + b"\r\n"))
    [answer] = await settle(small[1], 1)
    assert status_and_body(answer)[0] == 200


async def test_a_head_sent_too_slowly_is_refused_408_and_a_whole_one_arms_no_timer(connect):
    protocol, transport, router = connect()
    protocol.HEAD_SECONDS = 0.3  # 30 s in service
    protocol.data_received(request())  # a head that comes whole: no timer
    await settle(transport, 1)
    assert protocol.head_timer is None
    transport.buffer = b""
    protocol.data_received(b"GET " + INVOKE + b" HTTP/1.1\r\nhost: ngm\r\n")  # then a byte now and then
    for _ in range(10):
        await asyncio.sleep(0.05)
        if not transport.closed:
            protocol.data_received(b"x")
    await asyncio.sleep(0.4)
    assert transport.closed and transport.buffer.startswith(b"HTTP/1.1 408 ") and b"head_timeout" in transport.buffer
    assert len(router.requests) == 1  # the first request only
