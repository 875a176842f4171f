"""`ngm serve`: the Nexus app on our own uvicorn, bound to 127.0.0.1 by default, stopped cleanly by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time

from ngm import compiled
from ngm.config import Settings
from ngm.config.logging import setup_logging
from ngm.dataplane.access_log import access_log

log = logging.getLogger("ngm.server")


def _uvicorn_server(app, host: str, port: int, stopping, agent_traffic, on_started=None):
    import uvicorn

    from ngm.dataplane.protocol import agent_traffic_protocol

    class Server(uvicorn.Server):
        stop_watch_armed = False  # the slow-stop log is scheduled once, on the first signal

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            # end open event streams: uvicorn waits for them before shutting down
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(stopping.set)
            if not self.stop_watch_armed:
                self.stop_watch_armed = True
                loop.call_soon_threadsafe(loop.call_later, SLOW_STOP_SECONDS, _log_pending_tasks)
                _exit_if_still_stopping(HARD_STOP_SECONDS)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the process before
            # our own cleanup runs; here SIGINT/SIGTERM mean "drain, clean up, exit 0".
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and on_started is not None:
                on_started()

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            server_header=False, timeout_graceful_shutdown=10,
                            http=agent_traffic_protocol(agent_traffic))
    return Server(config)


SLOW_STOP_SECONDS = 15.0  # a stop takes well under a second after the drain (at most 10 s)
HARD_STOP_SECONDS = 25.0  # then exit regardless (before a supervisor's 30 s): a hung stop must not linger


def _exit_after(seconds: float, code: int, thread_name: str, say) -> None:
    """A daemon thread, not the event loop (which may be what hangs): `seconds` on, if the process is still
    here, say() why (a log line), flush the logs and end the process with `code` past whatever still runs."""

    def deadline():
        time.sleep(seconds)
        say()
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    threading.Thread(target=deadline, name=thread_name, daemon=True).start()


def _exit_if_still_stopping(after: float) -> None:
    """Exit 1 if a stop is still going `after` seconds on. Without it a worker hung in shutdown outlived its
    killed supervisor (seen in test runs)."""
    _exit_after(after, 1, "ngm-stop-deadline", lambda: log.error("still not stopped %g s after the signal: exiting",
                                                                 after))


def _log_pending_tasks() -> None:
    """Still stopping long after SIGTERM: say what the event loop is waiting for (it found a background loop
    whose cancellation a library had swallowed; ngm/tasks.py)."""
    import io

    stacks = []
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=8, file=out)
        stacks.append(f"{task.get_name()}: {out.getvalue()}")
    log.warning("still stopping %.0f s after the signal; %d task(s) pending:\n%s", SLOW_STOP_SECONDS, len(stacks),
                "\n".join(stacks))


def _shared_port_socket(host: str, port: int):
    """A worker's listening socket: every worker binds the same port (the kernel spreads connections)."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def _serve(settings: Settings, host: str, port: int, ready_fd: int | None = None) -> int:
    from ngm.context import AppContext
    from ngm.models.query import count
    from ngm.nexus_app import build_app
    from ngm.nodes.secrets.keyring import KeyringError

    try:
        ctx = await AppContext.open(settings)
    except KeyringError as exc:
        log.error("cannot start: %s", exc.message)
        return 2
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        log.error("cannot start: the database %s is unreachable (%s)", redacted(settings.database_url),
                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return 6
    try:
        if await count(ctx.database, "ApiKey", {"revoked_at": None}) == 0:
            log.warning("no API keys yet: create the first with `ngm keys create --org ORG --role org_owner`")
        app = build_app(ctx)
        # Everything built so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise stall the event loop for tens of milliseconds (seen as the router's p99).
        gc.collect()
        gc.freeze()
        state = app.fastapi_app.state
        sockets = None
        if ready_fd is not None:  # a worker of `ngm serve --workers N` (ngm/workers.py)
            try:
                sockets = [_shared_port_socket(host, port)]
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
                return 1

        def started():
            hot_path = compiled.status()
            log.info("serving on http://%s:%d (database %s, %d hot-path modules compiled%s)", host, port,
                     settings.database_url.split("://", 1)[0], hot_path["compiled"],
                     f", as source: {', '.join(hot_path['as_source'])}" if hot_path["as_source"] else "")
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        server = _uvicorn_server(state.asgi, host, port, state.stopping, state.agent_traffic, started)
        await server.serve(sockets=sockets)
        return 0 if server.started else 1
    finally:
        await ctx.close()
        access_log.flush()
        log.info("stopped")


def database_unreachable(exc: BaseException) -> bool:
    from ngm.errors import DatabaseUnavailable

    if isinstance(exc, (DatabaseUnavailable, OSError)):
        return True
    try:
        import psycopg2
    except ImportError:
        return False
    return isinstance(exc, psycopg2.OperationalError)


def redacted(url: str) -> str:
    """A database URL without its password, for logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return parts.geturl()


def serve(host: str = "127.0.0.1", port: int = 8000, ready_fd: int | None = None) -> int:
    """ready_fd: this is a worker (ngm/workers.py): bind the port shared, write b"1" there once serving."""
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    try:
        import uvloop

        code = uvloop.run(_serve(settings, host, port, ready_fd))
    except ImportError:
        code = asyncio.run(_serve(settings, host, port, ready_fd))
    return _exit_past_stray_threads(code)


def _exit_past_stray_threads(code: int, grace: float = 5.0) -> int:
    """Libraries run threads of their own (DataFlow's loop thread, aiosqlite's one per connection) and
    stop them during the interpreter's shutdown; once, under load, one never stopped and the process stayed
    alive after a clean shutdown. A daemon watchdog exits regardless if the interpreter is still shutting
    down after `grace` seconds, naming the threads it waited for; a normal exit never meets it."""

    def say():
        left = [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        log.warning("exiting past %d thread(s) a library left running: %s", len(left), ", ".join(left))

    _exit_after(grace, code, "ngm-exit-watchdog", say)
    return code


def _stop_with_parent() -> None:
    """A worker stops (gracefully) when its supervisor dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


if __name__ == "__main__":  # a worker: python -m ngm.server HOST PORT READY_FD SUPERVISOR_PID
    _stop_with_parent()
    if os.getppid() != int(sys.argv[4]):  # the supervisor died before the line above
        sys.exit(1)
    sys.exit(serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
