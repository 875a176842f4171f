"""The forwarding router's HTTP/1.1 client: asyncio protocols and the httptools C parser.

Chosen by measurement (bench/router_throughput.py): forwarding with aiohttp's client peaked at 5.3k
requests/s on this 2-core machine and httpx (through FastAPI) at 0.3k; this client at 15.9k, with the
same uvicorn server. It does what forwarding needs and no more: keep-alive pools per gateway origin,
the outbound address policy (resolved once, cached briefly, then pinned), TLS with the gateway's host
name, a streamed response body with back-pressure, and errors that say whether the gateway ever saw
the request (UpstreamUnreachable: safe to retry elsewhere) or broke while answering.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from typing import TYPE_CHECKING, cast

import httptools

from ngm.dataplane.turn_writes import turn_writes
from ngm.nodes.outbound.policy import OutboundPolicy, OutboundRefused

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    _Origin: TypeAlias = tuple[str, str, int]  # (scheme, host, port)

_QUEUE_HIGH = 32  # buffered body chunks before the upstream socket is paused
MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is refused (a gateway could send gigabytes of it)


class HeadTooLarge(Exception):
    pass


class UpstreamError(Exception):
    pass


class UpstreamUnreachable(UpstreamError):
    """No response byte arrived: the request can safely go to another gateway (if idempotent)."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamBroken(UpstreamError):
    """The answer started and then failed."""


class PoolBusy(UpstreamTimeout):
    """Every connection this pool may open to the gateway stayed busy until the request's deadline: ours to
    answer (504), not a failure of the gateway's (its circuit is not told)."""


class _Connection:
    """One keep-alive connection to a gateway (an asyncio protocol); its parser lives as long as it does."""

    def __init__(self, pool: "UpstreamPool", key: _Origin, loop: asyncio.AbstractEventLoop) -> None:
        # the loop kept: asyncio.get_running_loop() makes a getpid() system call on Python 3.11
        self.pool, self.key, self.loop = pool, key, loop
        self.transport = cast("asyncio.Transport", None)  # set by connection_made(), before create_connection returns
        self.writes, self.unflushed = turn_writes(loop), False  # requests go out at the end of the loop's turn
        self.parser = httptools.HttpResponseParser(self)
        self.response: "UpstreamResponse | None" = None
        self.reused = self.closed = self.fresh_parser_needed = False
        self.idle_since = time.monotonic()
        # The exchange's deadline for its response head, watched by one timer per connection that is
        # re-armed only when it fires early (a timer made and cancelled per request cost more)
        self.deadline, self.timeout = 0.0, 0.0
        self.timer: asyncio.TimerHandle | None = None

    def send(self, head: bytes, body: bytes, head_only: bool, deadline: float, timeout: float) -> "UpstreamResponse":
        """Write a request (head already serialised); its answer comes to the UpstreamResponse returned."""
        if head_only or self.fresh_parser_needed:
            # A HEAD answer announces a body that never comes: llhttp would wait for it on the next answer.
            self.parser = httptools.HttpResponseParser(self)
            self.fresh_parser_needed = head_only
        self.response = response = UpstreamResponse(self, head_only)
        self.writes.write(self, head + body if body else head)
        self.watch(deadline, timeout)
        return response

    def watch(self, deadline: float, timeout: float) -> None:
        """Fail the exchange under way with UpstreamTimeout if its head has not come by `deadline`."""
        self.deadline, self.timeout = deadline, timeout
        timer = self.timer
        if timer is None:
            self.timer = self.loop.call_at(deadline, self._check_deadline)
        elif timer.when() > deadline:
            timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self.timer = None
        response = self.response
        if response is None or response.head_done or response.error is not None:
            return  # idle, or the head came: the next exchange arms it again
        if self.loop.time() < self.deadline:  # a later exchange than the one that armed it
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)
            return
        _, host, port = self.key
        response.fail(UpstreamTimeout(f"no answer from {host}:{port} within {self.timeout:g} s"))
        self.transport.close()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is not usable
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(UpstreamBroken("upgrade not supported"))
        except httptools.HttpParserError as exc:
            too_large = isinstance(exc.__context__, HeadTooLarge) or isinstance(exc.__cause__, HeadTooLarge)
            response.fail(UpstreamBroken(f"response head larger than {MAX_HEAD_BYTES // 1024} KB" if too_large
                                         else f"bad response: {exc}"))
        if response.callback is not None:  # a head, part of a body: whatever came, once it is all parsed
            response.callback()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        response = self.response
        if response is not None:
            if not response.head_done:
                response.fail(UpstreamUnreachable("connection closed before an answer"))
            elif not response.complete:
                if response.delimited_by_close():
                    response.keep_alive = False
                    response.finish()
                else:
                    response.fail(UpstreamBroken("connection closed during the answer"))
        self.pool._forget(self)

    def pause_writing(self) -> None:  # request bodies are written in one go; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    def eof_received(self) -> None:  # the transport closes itself; connection_lost follows
        return None

    # -- parser callbacks, passed to the exchange under way
    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None  # the parser runs in data_received(), for a response under way
        response.head_bytes += len(name) + len(value) + 4
        if response.head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge  # the parser stops; data_received() fails the exchange
        response.headers.append((name, value))
        if len(name) == 10 and name.lower() == b"connection":  # the router drops what they list, all of them
            response.connection = value if response.connection is None else response.connection + b"," + value

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            response.headers = []
            response.connection = None
            return
        response.status = status
        response.head_done = True
        if response.head_only or status in (204, 304):
            self.on_message_complete()
        response.wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response.chunks.append(body)
        if len(response.chunks) > _QUEUE_HIGH and not response.paused:
            response.paused = True
            self.transport.pause_reading()
        response.wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.complete or not response.head_done:
            return
        response.keep_alive = self.parser.should_keep_alive()  # only meaningful inside the parser's callbacks
        response.finish()


class UpstreamResponse:
    """One exchange. The head is in once request() returns; read_nowait() hands over the body as it comes
    (wait() for more). Without a coroutine: `callback` is called when the answer is complete, when it
    failed, and after each read from the connection (see the router's forward_now)."""

    __slots__ = ("conn", "head_only", "status", "headers", "chunks", "head_done", "complete", "keep_alive", "error",
                 "paused", "waiter", "callback", "connection", "head_bytes")

    def __init__(self, conn: _Connection, head_only: bool):
        self.conn, self.head_only = conn, head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.head_done = self.complete = self.keep_alive = self.paused = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None  # made only when the reader has to wait
        self.callback: Callable[[], object] | None = None
        self.connection: bytes | None = None  # the gateway's Connection header
        self.head_bytes = 0

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self) -> None:
        self.complete = True
        self.wake()
        if self.callback is not None:
            self.callback()

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.wake()
        if self.callback is not None:
            self.callback()

    def delimited_by_close(self) -> bool:
        """No Content-Length and not chunked: the body ends when the connection does."""
        names = {n.lower(): v.lower() for n, v in self.headers}
        return b"content-length" not in names and b"chunked" not in names.get(b"transfer-encoding", b"")

    async def wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def read_nowait(self) -> bytes | None:
        """The body received since the last call; b"" once it is complete; None when there is nothing yet
        (await wait(), then ask again). Raises UpstreamBroken if the answer broke off."""
        if self.chunks:
            chunks, self.chunks = self.chunks, []
            if self.paused:
                self.paused = False
                self.conn.transport.resume_reading()
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.complete:
            return b""
        if self.error is not None:
            raise self.error
        return None

    def release(self) -> None:
        """Give the connection back when the exchange finished cleanly, else close it."""
        conn = self.conn
        conn.response = None
        if self.complete and self.error is None and self.keep_alive and not conn.closed:
            conn.pool._idle_push(conn)
        else:
            conn.transport.close()


class UpstreamPool:
    """Connections to gateways, kept alive and reused. At most `max_open_per_origin` are open to one origin at
    once (a gateway is not flooded with connections by a burst); a request beyond them waits, within its own
    deadline, for one to be given back or to close."""

    def __init__(self, policy: OutboundPolicy, *, max_idle_per_origin: int = 64, idle_seconds: float = 30.0,
                 dns_ttl: float = 10.0, connect_timeout: float = 5.0, max_open_per_origin: int = 256):
        self.policy = policy
        self.max_idle, self.idle_seconds, self.dns_ttl = max_idle_per_origin, idle_seconds, dns_ttl
        self.connect_timeout = connect_timeout
        self._idle: dict[_Origin, list[_Connection]] = collections.defaultdict(list)
        self._dns: dict[tuple[str, int], tuple[float, str]] = {}
        self._open: set[_Connection] = set()
        self._tls = ssl.create_default_context()
        self.max_open = max_open_per_origin
        self._per_origin: dict[_Origin, int] = {}  # open connections (idle or busy) per origin
        # origin -> futures of requests waiting for room
        self._queued: dict[_Origin, collections.deque[asyncio.Future[_Connection | None]]] = {}

    async def _address(self, host: str, port: int) -> str:
        hit = self._dns.get((host, port))
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        self.policy.check_name(host)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UpstreamUnreachable(f"cannot resolve {host}") from exc
        addresses = cast("list[str]", list(dict.fromkeys(info[4][0] for info in infos)))  # IP: str addresses
        self.policy.check(host, addresses)
        self._dns[(host, port)] = (now + self.dns_ttl, addresses[0])
        return addresses[0]

    async def _connect(self, scheme: str, host: str, port: int, deadline: float, timeout: float) -> _Connection:
        key = (scheme, host, port)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self.connect_timeout)):
                address = await self._address(host, port)
                # _Connection is an asyncio protocol without subclassing one (a C type when compiled)
                _, conn = await loop.create_connection(  # type: ignore[type-var]
                    lambda: _Connection(self, key, loop), address, port,
                    ssl=self._tls if scheme == "https" else None, server_hostname=host if scheme == "https" else None)
        except TimeoutError:
            if loop.time() >= deadline:
                raise UpstreamTimeout(f"no answer from {host}:{port} within {timeout:g} s") from None
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: TimeoutError") from None
        except OutboundRefused as exc:  # an OSError too: first
            raise UpstreamUnreachable(exc.message) from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: {type(exc).__name__}") from exc
        conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open.add(conn)
        return conn

    async def _room(self, key: _Origin, deadline: float, timeout: float) -> _Connection | None:
        """Wait, within the deadline, until a connection to this origin may be opened (None: counted as
        opening) or one is handed over as it is given back."""
        count = self._per_origin.get(key, 0)
        if count < self.max_open:
            self._per_origin[key] = count + 1
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        queue = self._queued.setdefault(key, collections.deque())
        queue.append(waiter)
        taken = False
        try:
            async with asyncio.timeout_at(deadline):
                conn = await waiter
            taken = True
            return conn
        except TimeoutError:
            raise PoolBusy(f"{self.max_open} connections to {key[1]}:{key[2]} busy for {timeout:g} s") from None
        finally:
            if not taken:
                if waiter.done() and not waiter.cancelled():
                    # handed over in the turn the deadline (or a cancel) came: given back, or the slot leaks
                    handed = waiter.result()
                    if handed is None:
                        self._closed(key)
                    else:
                        self._idle_push(handed)
                else:
                    waiter.cancel()
            if waiter in queue:
                queue.remove(waiter)
            if not queue and self._queued.get(key) is queue:
                self._queued.pop(key, None)

    def _hand_over(self, key: _Origin, conn: _Connection | None) -> bool:
        """A connection given back (conn) or closed (None): to the first request waiting for one, if any."""
        queue = self._queued.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                if conn is None:
                    self._per_origin[key] = self._per_origin.get(key, 0) + 1  # it opens one in place of it
                else:
                    conn.reused = True
                waiter.set_result(conn)
                return True
        return False

    def idle_connection(self, scheme: str, host: str, port: int) -> _Connection | None:
        """A kept-alive connection to that origin, if one is open (else request() connects)."""
        return self._idle_pop((scheme, host, port))

    def _idle_pop(self, key: _Origin) -> _Connection | None:
        idle, now = self._idle.get(key), time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_seconds:
                conn.reused = True
                return conn
            conn.transport.close()
        return None

    def _idle_push(self, conn: _Connection) -> None:
        if self._queued and self._hand_over(conn.key, conn):
            return
        idle = self._idle[conn.key]
        if len(idle) >= self.max_idle:
            conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._closed(conn.key)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _closed(self, key: _Origin) -> None:
        count = self._per_origin.get(key, 1) - 1
        if count > 0:
            self._per_origin[key] = count
        else:
            self._per_origin.pop(key, None)
        if self._queued:
            self._hand_over(key, None)

    async def request(self, scheme: str, host: str, port: int, head: bytes, body: bytes, *,
                      head_only: bool = False, timeout: float = 30.0) -> UpstreamResponse:
        """Send a request (head already serialised) and wait for the response head, within `timeout`.
        A reused keep-alive connection that turns out closed is replaced once, transparently."""
        key = (scheme, host, port)
        conn = self._idle_pop(key)
        loop = conn.loop if conn is not None else asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(2):
            if conn is None:
                conn = await self._room(key, deadline, timeout)
            if conn is None:
                try:
                    conn = await self._connect(scheme, host, port, deadline, timeout)
                except BaseException:
                    self._closed(key)  # the room it was counted in
                    raise
            response = conn.send(head, body, head_only, deadline, timeout)
            while not response.head_done and response.error is None:  # wait() inlined: one coroutine fewer
                response.waiter = loop.create_future()
                await response.waiter
            response.waiter = None
            if response.error is None:
                return response
            conn.response = None
            conn.transport.close()
            if not (isinstance(response.error, UpstreamUnreachable) and conn.reused):
                raise response.error
            conn = self._idle_pop(key)
        raise UpstreamUnreachable(f"{host}:{port} closed the connection twice")

    async def close(self) -> None:
        for conn in list(self._open):
            conn.transport.close()
        self._open.clear()
        self._idle.clear()
        self._per_origin.clear()
