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

    from ngm.channels.http_middleware import RequestMiddleware
    from ngm.channels.mcp import build_mcp_server, principal_of_request
    from ngm.channels.rest import install_error_handlers, mount_operations
    from ngm.channels.sse import mount_event_stream
    from ngm.dashboard import mount_dashboard
    from ngm.dataplane.invoke import trusted_networks
    from ngm.dataplane.protocol import AgentTraffic
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
        checks, status = await readiness(ctx, services)
        return JSONResponse({"status": status, "instance": INSTANCE, "checks": checks},
                            status_code=503 if status == "not_ready" else 200)

    async def call_tool(op, params, resource_id, request_ctx):
        return await executor.run(op, principal_of_request(request_ctx), params, resource_id, source="json")

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
    # Agent traffic never reaches the ASGI app: the server's protocol hands it to the router (dataplane/protocol.py).
    fa.state.agent_traffic = AgentTraffic(ctx.auth, routing.router, trusted_networks(ctx.settings.trusted_proxies))
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


async def readiness(ctx: AppContext, services=None) -> tuple[dict, str]:
    """Each dependency's state: ok, degraded (a fallback is serving: what it degrades is said) or down. The
    instance is ready while it can serve agent traffic: the router works from its last snapshot when the
    database is down, and rate limits fall back per deployment when Redis is, so both are `degraded`
    (200 with status "degraded"), not "not_ready" (503)."""
    checks: dict[str, dict] = {}
    start = time.perf_counter()
    try:
        await asyncio.wait_for(ctx.database.ping(), timeout=2.0)
        checks["database"] = {"state": "ok", "latency_ms": round((time.perf_counter() - start) * 1000, 1)}
    except Exception as exc:  # reported, not raised: this is what readiness is for
        ctx.database.availability.failed(exc)
        checks["database"] = {"state": "down", "error": type(exc).__name__,
                              "degraded": "management operations answer 503; the router serves from its last snapshot"}
    checks["database"]["outages"] = ctx.database.availability.outages
    checks["encryption"] = {"state": "ok" if ctx.keyring.key_count > 0 else "down", "keys": ctx.keyring.key_count}
    if ctx.redis is not None:
        try:
            await asyncio.wait_for(ctx.redis.ping(), timeout=1.0)
            checks["redis"] = {"state": "ok"}
        except Exception as exc:  # reported, not fatal: limits, counts and the monitor have fallbacks
            checks["redis"] = {"state": "down", "error": type(exc).__name__,
                               "degraded": "shared rate limits, in-flight counts, traffic figures, events, the "
                                           "monitor's lease and its probing share fall back to this instance (see "
                                           "their checks)"}
    from ngm.nodes.events.bus import RedisBus

    limits = ctx.limiter.status()
    degraded = limits["backend"] == "redis" and limits["mode"] != "shared"
    checks["rate_limits"] = {"state": "degraded" if degraded else "ok", **limits}
    if degraded:
        checks["rate_limits"]["degraded"] = ("Redis unreachable: fail-open deployments are limited locally at "
                                             "limit / live instances; fail-closed deployments answer 503")
    if ctx.redis is not None:
        checks["in_flight"] = ctx.inflight.fallback.status()
        if isinstance(ctx.bus, RedisBus):  # always, with Redis
            checks["event_bus"] = ctx.bus.fallback.status()
    if ctx.routing is not None and ctx.routing.redis_traffic is not None:
        checks["traffic_figures"] = ctx.routing.traffic_fallback.status()
    if services is not None:
        monitor = services.status()
        lease = services.lease
        fallback = getattr(lease, "fallback", False)
        unreachable = getattr(lease, "unreachable", False)
        state = "degraded" if fallback or unreachable or services.share.degraded else "ok"
        checks["monitor"] = {"state": state, **monitor}
        if state == "degraded":
            checks["monitor"]["degraded"] = f"{lease.mode}; {services.share.mode}"
    else:
        checks["monitor"] = {"state": "ok", "enabled": False}
    checks["hot_path"] = {"state": "ok", **compiled.status()}  # informational: as source it is slower, not wrong
    for check in checks.values():  # ok: what earlier versions of /readyz said, kept for scripts reading it
        check["ok"] = check["state"] == "ok"
    states = {c["state"] for c in checks.values()}
    fatal = checks["encryption"]["state"] != "ok"
    return checks, "not_ready" if fatal else "degraded" if states - {"ok"} else "ready"
