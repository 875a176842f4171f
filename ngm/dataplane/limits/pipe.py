"""One pipelined Redis connection for the rate limiter's hot path: commands are written as they come
(coalesced into one write per event-loop turn) and replies are matched to callers in order, so a check
never waits for another's round trip and no connection is checked out of a pool per call.

Why not redis-py here: its asyncio client sends one command per connection at a time and spends most of a
check packing the command in Python (bench/rate_limit_checks.py, py-spy on the router). Replies are parsed
by hiredis, the C parser redis-py itself uses. Everything else (script loading, scans, pub/sub, leases)
stays on redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    from typing import TypeAlias

    import redis.asyncio

    # what a reply goes to: a future, or on_reply(reply, error) (Pipe.send)
    OnReply: TypeAlias = Callable[[Any, Exception | None], None]
    # a command sent (or to be sent): (future or None, on_reply or None, when)
    _Waiter: TypeAlias = tuple[asyncio.Future[Any] | None, OnReply | None, float]

log = logging.getLogger("ngm.ratelimit")
SECOND_LOOK = 0.02  # seconds after a timeout is first seen (see Pipe._check_overdue)


def resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """A waiter's future gets the result or the error, unless it is done already (its caller gave up)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def pack_items(args: Sequence[object]) -> bytes:
    """Arguments as RESP bulk strings (the body of a command's array)."""
    parts = []
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def pack(args: Sequence[object]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + pack_items(args)


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: "Pipe") -> None:
        self.pipe = pipe
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.pipe._transport is self.transport:
            self.pipe._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe._transport is self.transport:  # not one the pipe already gave up on
            self.pipe._lost(exc or ConnectionError("Redis closed the connection"))


class Pipe:
    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float = 0.25, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password, self.timeout = username, password, timeout
        self.tls = tls  # rediss://: the context redis-py made of the URL's ssl_* settings
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None
        # sent (or to be sent), in order: (future or None, on_reply or None, when)
        self._waiting: deque[_Waiter] = deque()
        self._out: list[bytes] = []
        self._flush_soon = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_due = 0.0  # when the watchdog should run: run later, the loop was blocked
        self._overdue: _Waiter | None = None  # the waiting command found overdue once (see _check_overdue)
        self._reader = hiredis.Reader()

    @classmethod
    def for_client(cls, client: redis.asyncio.Redis, timeout: float = 0.25) -> "Pipe | None":
        """A pipe to the server of a redis-py client, over TLS for rediss:// (with the certificate checks the
        URL asks redis-py for); None for a unix socket, which redis-py then serves alone."""
        from redis.asyncio.connection import Connection, SSLConnection

        pool = client.connection_pool
        if pool.connection_class not in (Connection, SSLConnection):
            return None
        kw = pool.connection_kwargs
        tls = None
        if pool.connection_class is SSLConnection:
            tls = SSLConnection(**kw).ssl_context.get()
        return cls(kw.get("host", "localhost"), int(kw.get("port", 6379)), int(kw.get("db") or 0),
                   kw.get("username"), kw.get("password"), timeout, tls)

    def call(self, *args: object) -> asyncio.Future[Any]:
        """Send a command; the future gets its reply (or the error, or TimeoutError after `timeout`)."""
        return cast("asyncio.Future[Any]", self.send(pack(list(args))))  # no on_reply: send() made one

    def send(self, command: bytes, on_reply: OnReply | None = None) -> asyncio.Future[Any] | None:
        """Send a command already in RESP (see pack). Without `on_reply` a future gets the reply and the
        command is coalesced with the loop turn's others into one write. With `on_reply(reply, error)` the
        reply is handed over as soon as it is read, and the command (already a batch) is written at once:
        each saves a pass through the event loop's queue, which under load is a good part of a check's
        latency."""
        loop = asyncio.get_running_loop()
        future = loop.create_future() if on_reply is None else None
        self._waiting.append((future, on_reply, time.monotonic()))
        self._out.append(command)
        if self._transport is None:
            if self._connecting is None:
                self._connecting = loop.create_task(self._connect())
        elif on_reply is not None:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        if self._watchdog is None:
            self._arm(self.timeout)
        return future

    def _arm(self, delay: float) -> None:
        self._watchdog_due = time.monotonic() + delay
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._check_overdue)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
            self._out.clear()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port, ssl=self.tls,
                                       server_hostname=self.host if self.tls is not None else None),
                self.timeout)
            hello = []
            if self.password:
                hello.append(pack(["AUTH", *([self.username] if self.username else []), self.password]))
            if self.db:
                hello.append(pack(["SELECT", self.db]))
            for _ in hello:  # their replies come first; a failure shows in the commands behind them
                answered = loop.create_future()
                answered.add_done_callback(lambda f: f.cancelled() or f.exception())
                self._waiting.appendleft((answered, None, time.monotonic()))
            self._reader = hiredis.Reader()
            self._transport = transport
            transport.write(b"".join(hello + self._out))
            self._out.clear()
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail(ConnectionError(f"cannot reach Redis at {self.host}:{self.port}: {type(exc).__name__}"))
        finally:
            self._connecting = None

    def _received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:  # not Redis speaking: start over on a new connection
                self._fail(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                break
            if not self._waiting:
                continue
            future, on_reply, _ = self._waiting.popleft()
            error = None
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = (NoScriptError if message.startswith("NOSCRIPT") else ResponseError)(message)
                reply = None
            self._settle(future, on_reply, reply, error)

    @staticmethod
    def _settle(future: asyncio.Future[Any] | None, on_reply: OnReply | None, reply: Any,
                error: Exception | None) -> None:
        if on_reply is not None:
            try:
                on_reply(reply, error)
            except Exception:  # the caller's bug must not stop the replies behind it
                log.exception("rate-limit reply handler failed")
        else:
            assert future is not None  # send() makes one whenever on_reply is None
            resolve(future, reply, error)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        first = self._waiting[0]
        now = time.monotonic()
        due = first[2] + self.timeout - now
        if due > 0:
            self._arm(due)
        elif self._overdue is not first:
            # One more look after the loop has read its sockets: a loop that was blocked (a long callback, a
            # GC pause, a descheduled process) may not have written the command or read a reply Redis sent
            # in time, and the timer can come first when it runs again. This timer itself late means the loop
            # was blocked: the command may have been written only now, so Redis gets a whole timeout from now
            # (20 ms was too little for a busy Redis on a loaded machine).
            self._overdue = first
            self._arm(self.timeout if now - self._watchdog_due > SECOND_LOOK else SECOND_LOOK)
        else:  # replies come in order: nothing behind it can arrive
            self._fail(asyncio.TimeoutError(f"Redis did not answer within {self.timeout} s"))

    def _lost(self, exc: BaseException) -> None:
        self._transport = None
        self._fail(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))

    def _fail(self, exc: Exception) -> None:
        """Every caller still waiting learns it; the next call connects afresh."""
        transport, self._transport = self._transport, None
        waiting, self._waiting = self._waiting, deque()
        self._out.clear()
        self._overdue = None
        for future, on_reply, _ in waiting:
            self._settle(future, on_reply, None, exc)
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        self._fail(ConnectionError("closed"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
