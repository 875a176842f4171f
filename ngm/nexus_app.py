"""Build the Nexus app: every operation's workflow registered on Nexus, the operations served on REST
(/api/v1/...) and MCP (/mcp) from the same registry, health endpoints, and background services.

Nexus's own built-in routes are removed: /workflows/{name}/execute, /enterprise/workflows/.../execute_async,
/durability/* and /ws would run workflows without authentication and with any organization id a caller
cares to send. Only what is declared here is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from ngm import compiled
from ngm.context import AppContext

log = logging.getLogger("ngm.app")
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"  # which process answered /readyz (several behind one port)
_KEEP_NEXUS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _nexus():
    # Nexus logs an ERROR on every construction unless this is set; we do not use its secret store.
    os.environ.setdefault("KAILASH_ENCRYPTION_KEY", "ngm-does-not-use-the-kailash-secret-store-0000")
    from nexus import Nexus

    return Nexus


def build_app(ctx: AppContext, *, background: bool | None = None):
    """background: run the health monitor, webhook deliveries and pruning (default: NGM_MONITOR)."""
    from fastapi.responses import JSONResponse
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import Route

    from ngm.channels.agent_http import AgentTraffic
    from ngm.channels.http_middleware import RequestMiddleware
    from ngm.channels.mcp import build_mcp_server, principal_of_request
    from ngm.channels.rest import install_error_handlers, mount_operations
    from ngm.channels.sse import mount_event_stream
    from ngm.dashboard import mount_dashboard
    from ngm.workflows import load_operations
    from ngm.workflows.executor import Executor

    Nexus = _nexus()
    registry = load_operations()
    app = Nexus(enable_durability=False, enable_auth=False, rate_limit=None, runtime=ctx.runtime)
    for op in registry:
        app.register(op.name, registry.workflow(op))

    fa = app.fastapi_app
    fa.title, fa.version = "Nexus Gateway Manager", "1"
    fa.description = ("Gateway registry, health, deployments, routing and rate limits. "
                      "Auth: `Authorization: Bearer <key>` or `X-API-Key: <key>`.")
    fa.router.routes[:] = [r for r in fa.router.routes if getattr(r, "path", None) in _KEEP_NEXUS_ROUTES]
    fa.user_middleware[:] = [m for m in fa.user_middleware if m.cls is not CORSMiddleware]  # same-origin only
    fa.openapi_schema = None

    executor = Executor(ctx, registry)
    fa.state.executor = executor
    fa.state.ctx = ctx
    install_error_handlers(fa)
    mount_operations(fa, registry)
    fa.state.stopping = asyncio.Event()  # set on SIGTERM so long-lived streams end and shutdown is prompt
    mount_event_stream(fa, ctx.bus, fa.state.stopping)
    from ngm.nodes.routing.service import RoutingService

    routing = ctx.routing = RoutingService(ctx)
    services = None
    if ctx.settings.monitor_enabled if background is None else background:
        from ngm.background import BackgroundServices

        services = BackgroundServices(ctx)
    fa.state.background = services

    async def start_background():
        await ctx.bus.start()
        await routing.start()
        if services is not None:
            await services.start()

    async def stop_background():
        fa.state.stopping.set()
        if services is not None:
            await services.stop()
        await routing.stop()

    app.add_startup_handler(start_background)
    app.add_shutdown_handler(stop_background)

    @fa.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @fa.get("/readyz", include_in_schema=False)
    async def readyz():
        checks, ready = await readiness(ctx, services)
        return JSONResponse({"status": "ready" if ready else "not_ready", "instance": INSTANCE, "checks": checks},
                            status_code=200 if ready else 503)

    async def call_tool(op, params, resource_id, request_ctx):
        return await executor.run(op, principal_of_request(request_ctx), params, resource_id)

    mcp = build_mcp_server(registry, call_tool)
    # API keys guard /mcp, so the SDK's DNS-rebinding Host check adds nothing and would break proxies.
    # Stateless: every tool call stands alone (the key comes with each request), so a client's requests may
    # reach any worker or instance; sessions kept in one process's memory were unknown to the others.
    mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
                            stateless_http=True)
    fa.router.routes.append(Route("/mcp", endpoint=StreamableHTTPASGIApp(mcp.session_manager),
                                  methods=["GET", "POST", "DELETE"]))
    _run_during_lifespan(fa, mcp.session_manager.run)
    mount_dashboard(fa)

    # Outermost, in front of FastAPI's own middleware.
    fa.state.asgi = RequestMiddleware(fa, authenticator=ctx.auth.authenticate, limiter=ctx.limiter)
    # Agent traffic never reaches the ASGI app: the server's protocol hands it to the router (agent_http.py).
    fa.state.agent_traffic = AgentTraffic(ctx.auth, routing.router)
    return app


def _run_during_lifespan(fa, context_factory) -> None:
    """Enter an async context manager for the app's whole lifespan (the MCP session manager needs it)."""
    inner = fa.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with context_factory():
            async with inner(app) as state:
                yield state

    fa.router.lifespan_context = lifespan


async def readiness(ctx: AppContext, services=None) -> tuple[dict, bool]:
    checks = {}
    start = time.perf_counter()
    try:
        await asyncio.wait_for(ctx.db.express.count("ApiKey", filter={}), timeout=2.0)
        checks["database"] = {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}
    except Exception as exc:  # reported, not raised: this is what readiness is for
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["encryption"] = {"ok": ctx.keyring.key_count > 0, "keys": ctx.keyring.key_count}
    if ctx.redis is not None:
        try:
            await asyncio.wait_for(ctx.redis.ping(), timeout=1.0)
            checks["redis"] = {"ok": True}
        except Exception as exc:  # reported, not fatal: the monitor and limits have fallbacks
            checks["redis"] = {"ok": True, "reachable": False, "error": type(exc).__name__}
    checks["rate_limits"] = ctx.limiter.status()
    checks["monitor"] = {"ok": True, **services.status()} if services is not None else {"ok": True,
                                                                                          "enabled": False}
    checks["hot_path"] = {"ok": True, **compiled.status()}  # informational: as source it is slower, not wrong
    return checks, all(c["ok"] for c in checks.values())
