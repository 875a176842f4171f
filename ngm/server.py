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

from ngm.config import Settings
from ngm.config.logging import access_log, setup_logging

log = logging.getLogger("ngm.server")


def _uvicorn_server(app, host: str, port: int, stopping, agent_traffic):
    import uvicorn

    from ngm.channels.agent_http import agent_traffic_protocol

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            # end open event streams: uvicorn waits for them before shutting down
            asyncio.get_event_loop().call_soon_threadsafe(stopping.set)

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

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            server_header=False, timeout_graceful_shutdown=10,
                            http=agent_traffic_protocol(agent_traffic))
    return Server(config)


async def _serve(settings: Settings, host: str, port: int) -> int:
    from ngm.context import AppContext
    from ngm.nexus_app import build_app
    from ngm.nodes.secrets.keyring import KeyringError

    try:
        ctx = await AppContext.open(settings)
    except KeyringError as exc:
        log.error("cannot start: %s", exc.message)
        return 2
    try:
        if await ctx.db.express.count("ApiKey", filter={"revoked_at": None}) == 0:
            log.warning("no API keys yet: create the first with `ngm keys create --org ORG --role org_owner`")
        app = build_app(ctx)
        # Everything built so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise stall the event loop for tens of milliseconds (seen as the router's p99).
        gc.collect()
        gc.freeze()
        state = app.fastapi_app.state
        server = _uvicorn_server(state.asgi, host, port, state.stopping, state.agent_traffic)
        log.info("serving on http://%s:%d (database %s)", host, port, settings.database_url.split("://", 1)[0])
        await server.serve()
        return 0 if server.started else 1
    finally:
        await ctx.close()
        access_log.flush()
        log.info("stopped")


def serve(host: str = "127.0.0.1", port: int = 8000) -> int:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    try:
        import uvloop

        code = uvloop.run(_serve(settings, host, port))
    except ImportError:
        code = asyncio.run(_serve(settings, host, port))
    return _exit_past_stray_threads(code)


def _exit_past_stray_threads(code: int, grace: float = 5.0) -> int:
    """Libraries run threads of their own (DataFlow's loop thread, aiosqlite's one per connection) and
    stop them during the interpreter's shutdown; once, under load, one never stopped and the process stayed
    alive after a clean shutdown. A daemon watchdog exits regardless if the interpreter is still shutting
    down after `grace` seconds, naming the threads it waited for; a normal exit never meets it."""

    def watchdog():
        time.sleep(grace)
        me = threading.current_thread()
        left = [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and t is not me and not t.daemon and t.is_alive()]
        log.warning("exiting past %d thread(s) a library left running: %s", len(left), ", ".join(left))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    threading.Thread(target=watchdog, name="ngm-exit-watchdog", daemon=True).start()
    return code


if __name__ == "__main__":
    sys.exit(serve())
