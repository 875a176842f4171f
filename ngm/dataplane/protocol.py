"""Agent traffic off the ASGI path: uvicorn's httptools protocol, with /api/v1/agents/{id}/invoke/... served
by the forwarding router directly on the connection.

Why: per forwarded request, uvicorn's ASGI cycle (scope, task-driven receive/send, header checks) and
the middleware cost more CPU than the whole proxy exchange (bench/router_throughput.py). Everything
else (REST, MCP, dashboard, events) still goes through the ASGI app unchanged.

AgentRequest stands in for uvicorn's RequestResponseCycle on the protocol: it has the attributes the
protocol reads and writes on its cycle (body, more_body, message_event, response_complete,
disconnected, keep_alive), so keep-alive, pipelining, flow control and graceful shutdown stay uvicorn's.
That couples this module to uvicorn's HttpToolsProtocol, which is why the version is pinned and
tests/e2e/test_agent_http.py exercises each of those paths through a real socket.
"""

from __future__ import annotations

import http
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ngm.dataplane.access_log import access_log
from ngm.dataplane.edge import conflicting_credentials, is_credential, presented_key, request_id
from ngm.dataplane.invoke import MAX_BODY, PREFIX, forwarded_lines, invoke_target, is_trusted
from ngm.dataplane.limits.limiter import header_lines
from ngm.dataplane.memo import keep
from ngm.dataplane.turn_writes import TurnWrites, turn_writes
from ngm.errors import NgmError, Refusal

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Coroutine
    from typing import Literal, Protocol

    from uvicorn._types import ASGI3Application
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

    from ngm.dataplane.invoke import IPNetwork
    from ngm.dataplane.keys import KeyCache
    from ngm.dataplane.router import Router
    from ngm.nodes.auth.keys import Principal

    class _AgentProtocol(Protocol):
        """What AgentRequest and AgentTraffic use of their connection: agent_traffic_protocol()'s class, which is
        uvicorn's HttpToolsProtocol and ours."""

        @property
        def transport(self) -> asyncio.Transport: ...
        @property
        def flow(self) -> FlowControl: ...
        @property
        def loop(self) -> asyncio.AbstractEventLoop: ...
        @property
        def parser(self) -> httptools.HttpRequestParser: ...
        @property
        def server_state(self) -> ServerState: ...
        @property
        def scheme(self) -> Literal["http", "https"] | None: ...
        @property
        def client(self) -> tuple[str, int] | None: ...
        @property
        def headers(self) -> list[tuple[bytes, bytes]]: ...
        @property
        def expect_100_continue(self) -> bool: ...
        @property
        def connection(self) -> bytes | None: ...
        @property
        def credentials(self) -> int: ...
        @property
        def forwarded(self) -> bytes | None: ...
        @property
        def writes(self) -> TurnWrites: ...
        unflushed: bool
        def on_response_complete(self) -> None: ...
        def run_task(self, coro: Coroutine[Any, Any, None]) -> None: ...

log = logging.getLogger("ngm.routing")
_PREFIX = PREFIX.encode()
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})
MAX_HEAD = 64 * 1024  # a request line and headers (nginx's large_client_header_buffers: 4 x 8 KB)
_HEAD_TIMEOUT_BODY = b'{"error": {"code": "head_timeout", "message": "the request head did not arrive in time"}}'
_HEAD_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                 b"content-length: %d\r\n\r\n%b" % (len(_HEAD_TIMEOUT_BODY), _HEAD_TIMEOUT_BODY))
_HEAD_TOO_LARGE_BODY = json.dumps({"error": {"code": "head_too_large",
                                             "message": f"request line and headers over {MAX_HEAD} bytes"}}).encode()
_HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                   b"connection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(_HEAD_TOO_LARGE_BODY),
                                                                        _HEAD_TOO_LARGE_BODY))


class CallerGone(Exception):
    pass


# uvicorn's default headers (Date, kept current) and their lines
_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _default_lines(server_state: ServerState) -> bytes:
    """The lines of uvicorn's default headers, made again only when uvicorn replaces them (once a second)."""
    global _defaults
    headers = server_state.default_headers
    if headers is not _defaults[0]:
        _defaults = (headers, header_lines(headers))
    return _defaults[1]


class AgentRequest:
    __slots__ = ("protocol", "transport", "flow", "method", "method_bytes", "agent_id", "raw_path", "target",
                 "headers", "header_map", "client", "forwarded", "expect_100", "body", "more_body", "message_event",
                 "response_complete", "disconnected", "keep_alive", "waiter", "started", "chunked", "terminated",
                 "head_only", "status", "pending", "started_at", "rid", "principal", "connection", "credentials")

    def __init__(self, protocol: _AgentProtocol, method: bytes, agent_id: str, raw_path: bytes,
                 target: bytes | None, keep_alive: bool) -> None:
        self.protocol, self.transport, self.flow = protocol, protocol.transport, protocol.flow
        self.method, self.method_bytes = method.decode("ascii"), method
        self.agent_id, self.raw_path, self.target = agent_id, raw_path, target  # target: the gateway's
        self.headers: list[tuple[bytes, bytes]] = protocol.headers
        self.connection: bytes | None = protocol.connection  # every Connection header's value, joined
        self.credentials = protocol.credentials  # how many headers present a key (more than one: refused)
        self.header_map: dict[bytes, bytes] = {}  # filled by AgentTraffic.begin
        self.client, self.forwarded = protocol.client, protocol.forwarded
        self.expect_100 = protocol.expect_100_continue
        # what HttpToolsProtocol reads and writes on its cycle
        self.body = bytearray()
        self.more_body = True
        self.message_event = self  # .set() on body, end of body, disconnect
        self.response_complete = self.disconnected = False
        self.keep_alive = keep_alive
        # ours
        self.waiter: asyncio.Future[None] | None = None
        self.started = self.chunked = self.terminated = False
        self.pending: bytes | None = None  # the response head, written with the first body bytes
        self.head_only = self.method == "HEAD"
        self.status = 500
        self.started_at = time.perf_counter()
        self.rid = ""
        self.principal: Principal | None = None

    def set(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.protocol.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def complete_body(self) -> bytes | None:
        """The body when all of it came with the head, within the limit (as most do): no waiting, no
        coroutine. None: await read_body()."""
        if self.more_body or len(self.body) > MAX_BODY:
            return None
        return bytes(self.body)

    async def read_body(self) -> bytes:
        if self.more_body and self.expect_100 and not self.disconnected:
            self.expect_100 = False
            length = self.header_map.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY:  # not invited: refused now
                self.keep_alive = False
                raise Refusal(413, "body_too_large", f"request bodies are limited to {MAX_BODY} bytes")
            self._write_now(b"HTTP/1.1 100 Continue\r\n\r\n")
        while self.more_body and not self.disconnected:
            if len(self.body) > MAX_BODY:
                break
            self.flow.resume_reading()
            await self._wait()
        if len(self.body) > MAX_BODY:
            self.keep_alive = False  # the rest of the body is never read: this connection cannot go on
            raise Refusal(413, "body_too_large", f"request bodies are limited to {MAX_BODY} bytes")
        if self.more_body:  # the caller left mid-body: nothing may go upstream, nobody to answer
            self.status = 499  # as nginx logs it: client closed request
            raise CallerGone
        return bytes(self.body)

    # -- the response
    def start(self, status: int, lines: list[bytes], has_length: bool) -> None:
        """The status line and the header lines (`lines`: pieces of them as on the wire), held until the first
        body bytes (or flush(), or end()) so a small answer leaves in one write; without a Content-Length the
        body goes chunked (or, to an HTTP/1.0 client, until the connection closes)."""
        self.started, self.status = True, status
        out = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, _default_lines(self.protocol.server_state)]
        out += lines
        if not (has_length or self.head_only or status in _NO_BODY_STATUS):
            if self.protocol.parser.get_http_version() == "1.0":
                self.keep_alive = False
            else:
                self.chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        self.pending = b"".join(out)

    def flush(self) -> None:
        """Send the held head now (the body is not here yet: the caller should not wait for it)."""
        if self.pending is not None:
            if not self.disconnected:
                self._write_now(self.pending)
            self.pending = None

    def write(self, data: bytes, last: bool = False) -> bool:
        """A part of the body; `last`: the final one (a chunked body's terminator goes with it), written at the
        end of the loop's turn (turn_writes.py). True when the caller's connection is full: await drain()
        before writing more. (Not a coroutine: it runs for every forwarded answer and almost never has to
        wait.)"""
        if self.disconnected or self.head_only or not data:
            return False
        if self.chunked:
            data = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if last else b"%x\r\n%b\r\n" % (len(data), data)
            self.terminated = last
        if self.pending is not None:
            data, self.pending = self.pending + data, None
        if last:
            self._write_later(data)
            return False
        self._write_now(data)
        return self.flow.write_paused

    def _write_now(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.writes.flush_for(protocol)
        self.transport.write(data)

    def _write_later(self, data: bytes) -> None:
        """The end of the answer, at the end of the loop's turn (a connection that closes first sends it)."""
        self.protocol.writes.write(self.protocol, data)

    async def drain(self) -> None:
        await self.flow.drain()

    def abort(self) -> None:
        """End a started answer by closing the connection: the caller sees a cut answer, not a truncated
        one that looks complete."""
        self.chunked = self.keep_alive = False
        self.end()

    def end(self) -> None:
        if self.response_complete:
            return
        out, self.pending = self.pending or b"", None
        if self.chunked and not self.terminated:
            out += b"0\r\n\r\n"
        if out and not self.disconnected:
            self._write_later(out)
        self.response_complete = True
        if not self.keep_alive:  # now, as uvicorn would: on_response_complete must see the connection closing
            self.protocol.writes.flush_for(self.protocol)  # what waits for the turn's end goes first
            self.transport.close()
        self.protocol.on_response_complete()

    def reply_json(self, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
        """A whole small answer (an error): written at once, nothing to wait for after it."""
        body = json.dumps(payload).encode()
        self.start(status, [b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                            header_lines(headers)], True)
        self.write(body, last=True)
        self.end()


class AgentTraffic:
    """Authenticate, forward, log: what RequestMiddleware does for the ASGI app, for agent traffic."""

    def __init__(self, authenticator: KeyCache, router: Router, trusted: tuple[IPNetwork, ...] = ()) -> None:
        self.authenticator, self.router = authenticator, router
        self.trusted = trusted  # NGM_TRUSTED_PROXIES: whose X-Forwarded-* are believed

    def begin(self, request: AgentRequest) -> Coroutine[Any, Any, None] | None:
        """Start serving a request whose head (and whatever body came with it) is in: without a coroutine
        when nothing has to be waited for (the router's forward_now). Returns the coroutine to run as the
        request's task, or None."""
        headers = request.header_map = dict(request.headers)
        request.rid = request_id(headers.get(b"x-request-id"))
        body = request.complete_body()
        try:
            if request.credentials > 1:
                raise conflicting_credentials()
            if request.target is None:
                raise Refusal(400, "invalid_path", "the path may not contain dot segments ('.', '..'), encoded "
                                                   "slashes or backslashes, in any encoding",
                              [{"field": "path", "message": "could leave the gateway's base path"}])
            if request.forwarded is None:  # from a trusted proxy: its chain, extended
                client = request.client
                assert request.protocol.scheme is not None  # set when the connection was made
                request.forwarded = forwarded_lines(client[0] if client else "", request.protocol.scheme, headers,
                                                    self.trusted)
            principal = self.authenticator.cached(presented_key(headers))
            if principal is None or body is None:  # the key to load, the body to wait for
                return self.serve(request)
            request.principal = principal
            rest = self.router.forward_now(request, principal, request.rid, body, self)
            return None if rest is None else self.serve(request, rest)
        except Exception as exc:
            self.failed(request, exc)
        self.finished(request)
        return None

    def resume(self, request: AgentRequest, rest: Awaitable[None]) -> None:
        """Go on with a request begun without a coroutine in one: `rest`, as the request's task."""
        request.protocol.run_task(self.serve(request, rest))

    async def serve(self, request: AgentRequest, rest: Awaitable[None] | None = None) -> None:
        """The exchange as the request's task: all of it, or `rest` of it (one coroutine level: each is paid
        again on every resume)."""
        try:
            if rest is None:
                presented = presented_key(request.header_map)
                principal = self.authenticator.cached(presented) or await self.authenticator.authenticate(presented)
                request.principal = principal
                rest = self.router.forward(request, principal, request.rid)
            await rest
        except Exception as exc:
            self.failed(request, exc)
        finally:
            self.finished(request)

    def finished(self, request: AgentRequest) -> None:
        request.end()
        access_log.add(request.client, request.method, request.raw_path, request.status, request.started_at,
                       request.principal, request.rid)

    @staticmethod
    def failed(request: AgentRequest, exc: Exception) -> None:
        """Answer what went wrong, or cut off an answer already under way."""
        if isinstance(exc, CallerGone):
            return
        if not isinstance(exc, NgmError):
            log.error("agent request failed", exc_info=exc)
        if request.started:
            request.abort()
            return
        rid = [(b"x-request-id", request.rid.encode())]
        if isinstance(exc, NgmError):  # the router's refusals, rate limits, authentication
            extra = [(b"www-authenticate", b'Bearer realm="ngm"')] if exc.status == 401 else []
            if exc.retry_after:
                extra.append((b"retry-after", str(exc.retry_after).encode()))
            request.reply_json(exc.status, exc.to_body(), [*rid, *extra, *(exc.headers or ())])
        else:
            request.reply_json(500, {"error": {"code": "internal_error", "message": "internal error"}}, rid)


# request target -> (agent id, raw path, the gateway's target), or None when it is not an invoke path: callers
# repeat a few targets, and parsing one cost 4-7% of the router's CPU per request
_invoke_targets: dict[bytes, tuple[str, bytes, bytes | None] | None] = {}
_UNSEEN = object()


def _invoke_target(url: bytes) -> tuple[str, bytes, bytes | None] | None:
    """(agent id, raw path, the gateway's target: None when the path could leave the gateway's base path)."""
    parsed = httptools.parse_url(url)  # raises on an invalid target, as uvicorn's own parse does: a 400
    raw_path = parsed.path
    invoke = invoke_target(raw_path, parsed.query or b"")
    target = None if invoke is None else (invoke[0], raw_path, invoke[1])
    return keep(_invoke_targets, url, target, 4096)


def agent_traffic_protocol(traffic: AgentTraffic) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), serving agent traffic with `traffic`."""

    class AgentTrafficProtocol(HttpToolsProtocol):
        # uvicorn arms a keep-alive timer after every answer and cancels it on the next request's bytes;
        # here one timer per connection notes when it went idle and fires at most once per keep-alive
        # period (uvicorn's own timeout_keep_alive_task stays None, so its cancel calls do nothing)
        idle_since: float | None = None
        idle_timer = None
        unstarted: AgentRequest | None = None  # begun once the parser has had all the bytes that came
        writes: TurnWrites
        forwarded: bytes | None = b"\r\n"  # None: from a trusted proxy, made per request (AgentTraffic.begin)
        unflushed = False  # the end of an answer waits in `writes` (whatever uvicorn writes must follow it)
        connection: bytes | None = None  # the request's Connection headers, all of them (their names are dropped)
        credentials = 0  # the request's headers that present a key
        in_head = False  # the parser calls on_header for a chunked body's trailers too: those are not headers
        head_bytes = 0  # received while a request's head is incomplete (the parser keeps it all in memory)
        heads_begun = 0
        head_timer = None  # armed only when a read ends inside a head (a head that comes whole never is)
        HEAD_SECONDS = 30.0  # a head must be whole this long after it began to arrive in pieces (slowloris)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
            self.writes = turn_writes(self.loop)
            super().connection_made(transport)
            assert self.scheme is not None  # set by uvicorn's connection_made
            # what every request forwarded from this connection tells the gateway about it
            peer = self.client[0] if self.client else ""
            self.forwarded = (None if is_trusted(peer, traffic.trusted)
                              else forwarded_lines(peer, self.scheme))

        def data_received(self, data: bytes) -> None:
            self.idle_since = None
            # a pipelining caller's answers before uvicorn's own (a 400, say) when the loop reads this connection
            # twice in one turn (it does after a full buffer)
            self.writes.flush_for(self)
            # uvicorn's data_received, compiled here (its keep-alive timer, which it would cancel first, is
            # never armed: see on_response_complete)
            continuing, begun = self.in_head, self.heads_begun  # a head under way when this read came
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            # a head still under way after a read that began inside it: all of that read was head, which may not
            # grow without bound (a read that begins a head, up to 256 KB, is not counted: the bound is loose)
            if continuing and self.in_head and begun == self.heads_begun and not self.transport.is_closing():
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD:
                    self.logger.warning("request head over %d bytes: refused", MAX_HEAD)
                    self.transport.write(_HEAD_TOO_LARGE)
                    self.transport.close()
                    return
            if self.in_head and self.head_timer is None and not self.transport.is_closing():
                self.head_timer = self.loop.call_at(self.loop.time() + self.HEAD_SECONDS, self._head_check,
                                                    self.heads_begun)
            request = self.unstarted
            if request is not None:
                self.unstarted = None
                if not self.transport.is_closing():  # else the parser refused what followed the head
                    self._start_asgi_task(request, None)

        def on_response_complete(self) -> None:
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            flow = self.flow
            if flow.read_paused:  # (uvicorn's FlowControl is interpreted: asked first, called only when paused)
                flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self.idle_since = now = self.loop.time()
            if self.idle_timer is None:
                self.idle_timer = self.loop.call_at(now + self.timeout_keep_alive, self._idle_check)

        def _idle_check(self) -> None:
            self.idle_timer = None
            if self.idle_since is None or self.transport.is_closing():
                return  # busy: the answer that ends it arms the timer again
            due = self.idle_since + self.timeout_keep_alive
            if self.loop.time() >= due:
                self.timeout_keep_alive_handler()
            else:
                self.idle_timer = self.loop.call_at(due, self._idle_check)

        def eof_received(self) -> None:
            # the transport closes after this, sending what is buffered: an answer written from a task in the
            # turn before must be in that buffer (no test forces that order: under uvloop the caller's EOF
            # has always come a turn after the answer was queued)
            self.writes.flush_for(self)
            return super().eof_received()

        def shutdown(self) -> None:
            self.writes.flush_for(self)
            super().shutdown()

        def _head_check(self, head: int) -> None:
            self.head_timer = None
            if self.in_head and self.heads_begun == head and not self.transport.is_closing():
                self.logger.warning("request head not whole after %g s: connection closed", self.HEAD_SECONDS)
                self.transport.write(_HEAD_TIMEOUT)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
                self.idle_timer = None
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            super().connection_lost(exc)

        # The parser's callbacks as uvicorn's, compiled with this module (uvicorn's run in the interpreter, for
        # every request), except that the ASGI scope is made only for a request that goes to the ASGI app
        def on_message_begin(self) -> None:
            self.in_head, self.head_bytes = True, 0
            self.heads_begun += 1
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.connection = None
            self.credentials = 0

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self.in_head:
                return  # a trailer: neither forwarded nor read as a credential
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            elif name == b"connection":
                self.connection = value if self.connection is None else self.connection + b"," + value
            elif name == b"x-api-key" or name == b"authorization":
                self.credentials += is_credential(name, value)
            self.headers.append((name, value))

        def on_body(self, body: bytes) -> None:
            cycle: RequestResponseCycle | AgentRequest = self.cycle
            if type(cycle) is not AgentRequest:
                return super().on_body(body)
            if cycle.response_complete:
                return
            cycle.body += body
            if len(cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.set()

        def on_message_complete(self) -> None:
            cycle: RequestResponseCycle | AgentRequest = self.cycle
            if type(cycle) is not AgentRequest:
                return super().on_message_complete()
            if not cycle.response_complete:
                cycle.more_body = False
                cycle.set()

        def _to_asgi_app(self) -> None:
            """uvicorn's on_headers_complete, with the scope its on_message_begin would have made."""
            # method, path, raw_path and query_string: added by uvicorn's on_headers_complete (ignored as uvicorn's)
            self.scope = {"type": "http",  # type: ignore[typeddict-item]
                          "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                          "http_version": "1.1", "server": self.server, "client": self.client,
                          "scheme": self.scheme,  # type: ignore[typeddict-item]  # set once connected
                          "root_path": self.root_path, "headers": self.headers, "state": self.app_state.copy()}
            super().on_headers_complete()

        def on_headers_complete(self) -> None:
            self.in_head = False
            url = self.url
            if not url.startswith(_PREFIX) or self.parser.should_upgrade():
                return self._to_asgi_app()
            invoke = _invoke_targets.get(url, _UNSEEN)
            if invoke is _UNSEEN:
                invoke = _invoke_target(url)
            if invoke is None:
                return self._to_asgi_app()
            version = self.parser.get_http_version()
            # `invoke`: the memo's tuple, never _UNSEEN (replaced above), which `is` cannot tell mypy (a cast would
            # be a call per request)
            request = AgentRequest(self, self.parser.get_method(), *invoke,  # type: ignore[call-arg, misc]
                                   version != "1.0" and self.parser.should_keep_alive())
            # an AgentRequest stands in for uvicorn's cycle (the attributes it reads and writes: see the module)
            existing, self.cycle = self.cycle, request  # type: ignore[assignment]
            if existing is None or existing.response_complete:
                self.unstarted = request  # with the body that came along, if any: see data_received
            else:  # pipelined: uvicorn starts it when the one before has answered
                self.flow.pause_reading()
                self.pipeline.appendleft((request, None))  # type: ignore[arg-type]  # (as self.cycle above)

        def _start_asgi_task(self, cycle: RequestResponseCycle | AgentRequest, app: ASGI3Application | None) -> None:
            if type(cycle) is not AgentRequest:  # uvicorn's cycle, with its app
                return super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]
            rest = traffic.begin(cycle)
            if rest is not None:
                self.run_task(rest)

        def run_task(self, coro: Coroutine[Any, Any, None]) -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    return AgentTrafficProtocol
