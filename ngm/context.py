"""What every node and channel needs at run time: the settings and the services built from them.

One AppContext per process (tests may open several), built by `AppContext.open`, which makes every service
once and hands each what it uses. The executor binds it to a ContextVar around each
workflow execution, with the operation's transaction, so Kailash nodes reach both without passing live
objects through workflow inputs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ngm.config import Settings
from ngm.models.database import Database, Transaction

if TYPE_CHECKING:  # imported by AppContext.open: the CLI's remote path, which opens none, imports none of them
    import redis.asyncio
    from kailash.runtime.async_local import AsyncLocalRuntime

    from ngm.dataplane.inflight import InFlight
    from ngm.dataplane.limits.limiter import RateLimiter
    from ngm.dataplane.router import Router
    from ngm.nodes.auth.store import KeyAuthenticator
    from ngm.nodes.events.bus import LocalBus
    from ngm.nodes.health.lease import LocalLease, RedisLease
    from ngm.nodes.health.probe import ProbeClient
    from ngm.nodes.health.recorder import HealthRecorder
    from ngm.nodes.health.store import HealthStore
    from ngm.nodes.outbound.policy import OutboundClient
    from ngm.nodes.routing.service import RoutingService
    from ngm.nodes.secrets.keyring import Keyring

log = logging.getLogger("ngm.context")
_current: contextvars.ContextVar["AppContext"] = contextvars.ContextVar("ngm_app_context")
_transaction: contextvars.ContextVar["Transaction | None"] = contextvars.ContextVar("ngm_transaction",
                                                                                     default=None)


def current() -> "AppContext":
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no AppContext bound: run nodes through ngm.workflows.executor") from None


def current_transaction() -> "Transaction | None":
    return _transaction.get()


def bind(ctx: "AppContext", transaction: "Transaction | None" = None):
    return _current.set(ctx), _transaction.set(transaction)


def unbind(tokens) -> None:
    _current.reset(tokens[0])
    _transaction.reset(tokens[1])


@dataclass
class AppContext:
    """The process's services, each built once by `open` (the factory) from the settings and handed what it
    uses; `routing` is added by the serving app, which alone forwards agent traffic."""

    settings: Settings
    database: Database
    keyring: Keyring
    outbound: OutboundClient  # calls to operator-configured addresses (webhooks); its policy holds for every call
    probes: ProbeClient  # health probes
    runtime: AsyncLocalRuntime  # runs the workflows of several nodes
    auth: KeyAuthenticator
    health_store: HealthStore
    recorder: HealthRecorder
    inflight: InFlight
    limiter: RateLimiter
    bus: LocalBus  # a RedisBus (a LocalBus too) with Redis
    lease: LocalLease | RedisLease
    redis: redis.asyncio.Redis | None = None  # when NGM_REDIS_URL is set
    routing: RoutingService | None = None  # in a serving process

    @classmethod
    async def open(cls, settings: Settings, *, create_key_file: bool = True) -> AppContext:
        from kailash.runtime.async_local import AsyncLocalRuntime

        from ngm.dataplane.inflight import InFlight
        from ngm.models.database import open_database
        from ngm.nodes.auth.store import KeyAuthenticator
        from ngm.nodes.events.bus import LocalBus, RedisBus
        from ngm.nodes.health.lease import LocalLease, RedisLease, instance_id
        from ngm.nodes.health.probe import ProbeClient
        from ngm.nodes.health.recorder import HealthRecorder
        from ngm.nodes.health.store import HealthStore
        from ngm.nodes.outbound.policy import OutboundClient, OutboundPolicy
        from ngm.nodes.secrets.verify import open_keyring

        database = await open_database(settings.database_url)
        try:
            keyring = await open_keyring(database, settings, create=create_key_file)
        except Exception:
            await database.close()
            raise
        outbound = OutboundClient(OutboundPolicy.from_setting(settings.outbound_allow, settings.outbound_only),
                                  max_connections=max(settings.monitor_concurrency, 16))
        client = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            client = aioredis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        bus = RedisBus(client, f"{settings.redis_namespace}:events") if client else LocalBus()
        lease: LocalLease | RedisLease = (RedisLease(client, f"{settings.redis_namespace}:monitor-lease",
                                                     settings.monitor_lease_seconds) if client else LocalLease())
        health_store = HealthStore(database)
        return cls(settings=settings, database=database, keyring=keyring, outbound=outbound,
                   probes=ProbeClient(outbound.policy),
                   runtime=AsyncLocalRuntime(), auth=KeyAuthenticator(database, ttl=settings.auth_cache_seconds),
                   health_store=health_store, recorder=HealthRecorder(health_store, bus),
                   inflight=InFlight(client, settings.redis_namespace, instance_id()),
                   limiter=_limiter(settings), bus=bus, lease=lease, redis=client)

    async def live_router(self) -> "Router":
        """The serving process's router; elsewhere (CLI, stdio MCP) one built from the database now."""
        if self.routing is not None:
            if self.routing.table.stale():
                await self.routing.refresh_table()
            return self.routing.router
        from ngm.dataplane.circuit import CircuitBreakers
        from ngm.dataplane.router import Router
        from ngm.dataplane.table import RoutingTable
        from ngm.dataplane.traffic import TrafficStats
        from ngm.nodes.routing.nodes import strategy_nodes
        from ngm.nodes.routing.snapshot import SnapshotLoader

        table = RoutingTable()
        table.publish(await SnapshotLoader(self.database, self.keyring).load())
        return Router(table, None, CircuitBreakers(), TrafficStats(), self.inflight, strategy_nodes())

    async def routing_changed(self) -> None:
        """Deployments or policies changed: this process re-reads before answering (the caller's next request
        sees the change), the others when the bus tells them."""
        from ngm.nodes.events.bus import ROUTING_CHANGED
        from ngm.nodes.events.store import make_event

        if self.routing is not None:
            await self.routing.refresh_table()
        asyncio.get_running_loop().create_task(self.bus.publish(make_event(ROUTING_CHANGED, "", {})))

    async def keys_changed(self, key_id: str, revoked: bool = False) -> None:
        """An API key was revoked or changed: forget that key here and (through the bus) everywhere."""
        from ngm.nodes.events.bus import KEYS_CHANGED
        from ngm.nodes.events.store import make_event

        self.auth.forget(key_id, revoked)
        event = make_event(KEYS_CHANGED, "", {"key_id": key_id, "revoked": revoked})
        asyncio.get_running_loop().create_task(self.bus.publish(event))

    async def traffic_window(self, deployment_ids: list[str], seconds: int) -> tuple[dict, bool]:
        """(figures per deployment, whether they cover every instance's requests)."""
        if self.routing is not None:
            return await self.routing.traffic(deployment_ids, seconds)
        from ngm.dataplane.traffic import Bucket

        if self.redis is not None:  # a CLI or stdio MCP process: the figures the servers share
            import time

            from ngm.dataplane.traffic import RedisTraffic

            try:
                return await RedisTraffic(self.redis, self.settings.redis_namespace).window(
                    deployment_ids, seconds, time.time()), True
            except Exception:  # Redis unreachable: no figures to show, and said so
                pass
        return {d: Bucket() for d in deployment_ids}, False

    async def close(self) -> None:
        await self.outbound.close()
        await self.probes.close()
        await self.bus.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.limiter.shared is not None:
            self.limiter.shared.close()
        if self.limiter.redis is not None:
            await self.limiter.redis.aclose()
        self.runtime.close()
        await self.database.close()


def _limiter(settings: Settings) -> RateLimiter:
    """Rate limits: shared through Redis (its own client: a dead Redis costs a request 250 ms at most, once),
    else in this process."""
    from ngm.dataplane.limits.limiter import RateLimiter
    from ngm.nodes.health.lease import instance_id

    shared = client = None
    if settings.redis_url:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from ngm.dataplane.limits.redis_backend import RedisBackend

        # a bounded pool that queues callers (briefly): a burst must wait for a connection, not be taken for a
        # dead Redis
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=64, timeout=0.25, socket_timeout=0.25, socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        client = aioredis.Redis(connection_pool=pool)
        shared = RedisBackend(client, settings.redis_namespace)
    return RateLimiter(shared, settings.api_rate_limit, instance=instance_id(), redis=client,
                       namespace=settings.redis_namespace)
