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

import httptools

from ngm.nodes.outbound.policy import OutboundPolicy, OutboundRefused

_QUEUE_HIGH = 32  # buffered body chunks before the upstream socket is paused


class UpstreamError(Exception):
    pass


class UpstreamUnreachable(UpstreamError):
    """No response byte arrived: the request can safely go to another gateway (if idempotent)."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamBroken(UpstreamError):
    """The answer started and then failed."""


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key):
        self.pool, self.key = pool, key
        self.transport = None
        self.response: "UpstreamResponse | None" = None
        self.reused = False
        self.closed = False
        self.idle_since = time.monotonic()

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is not usable
            self.transport.close()
            return
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(UpstreamBroken("upgrade not supported"))
        except httptools.HttpParserError as exc:
            response.fail(UpstreamBroken(f"bad response: {exc}"))

    def connection_lost(self, exc):
        self.closed = True
        if self.response is not None:
            if not self.response.head_done:
                self.response.fail(UpstreamUnreachable("connection closed before an answer"))
            elif not self.response.complete:
                if self.response.delimited_by_close():
                    self.response.on_message_complete()
                    self.response.keep_alive = False
                else:
                    self.response.fail(UpstreamBroken("connection closed during the answer"))
        self.pool._forget(self)

    def pause_writing(self):  # request bodies are written in one go; nothing to pause
        pass

    def resume_writing(self):
        pass


class UpstreamResponse:
    def __init__(self, conn: _Connection, head_only: bool):
        self.conn = conn
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.complete = self.keep_alive = False
        self.error: Exception | None = None
        self.chunks: collections.deque = collections.deque()
        self._head = asyncio.get_running_loop().create_future()
        self._more = asyncio.Event()
        self._paused = False

    # -- parser callbacks
    def on_header(self, name: bytes, value: bytes):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        self.head_done = True
        if not self._head.done():
            self._head.set_result(None)
        if self.head_only or self.status in (204, 304) or 100 <= self.status < 200:
            self.on_message_complete()

    def on_body(self, body: bytes):
        self.chunks.append(body)
        self._more.set()
        if len(self.chunks) > _QUEUE_HIGH and not self._paused:
            self._paused = True
            self.conn.transport.pause_reading()

    def on_message_complete(self):
        if self.complete:
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside the parser's callbacks
        self._more.set()

    def fail(self, exc: Exception):
        self.error = exc
        if not self._head.done():
            self._head.set_exception(exc)
        self._more.set()

    def delimited_by_close(self) -> bool:
        """No Content-Length and not chunked: the body ends when the connection does."""
        names = {n.lower(): v.lower() for n, v in self.headers}
        return b"content-length" not in names and b"chunked" not in names.get(b"transfer-encoding", b"")

    # -- consumer side
    async def wait_head(self):
        await self._head

    async def body(self):
        """The body in chunks as they arrive; raises UpstreamBroken if it breaks off."""
        while True:
            while self.chunks:
                yield self.chunks.popleft()
                if self._paused and len(self.chunks) < _QUEUE_HIGH // 2:
                    self._paused = False
                    self.conn.transport.resume_reading()
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self._more.clear()
            await self._more.wait()

    def release(self):
        """Give the connection back when the exchange finished cleanly, else close it."""
        conn = self.conn
        conn.response = None
        if self.complete and self.error is None and self.keep_alive and not conn.closed:
            self.conn.pool._idle_push(conn)
        else:
            conn.transport.close()


class UpstreamPool:
    def __init__(self, policy: OutboundPolicy, *, max_idle_per_origin: int = 64, idle_seconds: float = 30.0,
                 dns_ttl: float = 10.0, connect_timeout: float = 5.0):
        self.policy = policy
        self.max_idle, self.idle_seconds, self.dns_ttl = max_idle_per_origin, idle_seconds, dns_ttl
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple, list[_Connection]] = collections.defaultdict(list)
        self._dns: dict[tuple, tuple[float, str]] = {}
        self._open: set[_Connection] = set()
        self._tls = ssl.create_default_context()

    async def _address(self, host: str, port: int) -> str:
        hit = self._dns.get((host, port))
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UpstreamUnreachable(f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        self.policy.check(host, addresses)
        self._dns[(host, port)] = (now + self.dns_ttl, addresses[0])
        return addresses[0]

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        address = await self._address(host, port)
        key = (scheme, host, port)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key), address, port,
                    ssl=self._tls if scheme == "https" else None, server_hostname=host if scheme == "https" else None)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: {type(exc).__name__}") from exc
        conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open.add(conn)
        return conn

    def _idle_pop(self, key) -> _Connection | None:
        idle, now = self._idle.get(key), time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_seconds:
                conn.reused = True
                return conn
            conn.transport.close()
        return None

    def _idle_push(self, conn: _Connection) -> None:
        idle = self._idle[conn.key]
        if len(idle) >= self.max_idle:
            conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def request(self, scheme: str, host: str, port: int, head: bytes, body: bytes, *,
                      head_only: bool = False, timeout: float = 30.0) -> UpstreamResponse:
        """Send a request (head already serialised) and wait for the response head, within `timeout`.
        A reused keep-alive connection that turns out closed is replaced once, transparently."""
        key = (scheme, host, port)
        try:
            async with asyncio.timeout(timeout):
                for _ in range(2):
                    conn = self._idle_pop(key) or await self._connect(scheme, host, port)
                    response = conn.response = UpstreamResponse(conn, head_only)
                    conn.transport.write(head + body if body else head)
                    try:
                        await response.wait_head()
                        return response
                    except UpstreamUnreachable:
                        conn.transport.close()
                        if not conn.reused:
                            raise
                raise UpstreamUnreachable(f"{host}:{port} closed the connection twice")
        except TimeoutError:
            raise UpstreamTimeout(f"no answer from {host}:{port} within {timeout:g} s") from None
        except OutboundRefused as exc:
            raise UpstreamUnreachable(exc.message) from exc

    async def close(self) -> None:
        for conn in list(self._open):
            conn.transport.close()
        self._open.clear()
        self._idle.clear()
