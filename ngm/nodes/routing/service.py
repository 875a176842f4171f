"""The data plane of one process: routing table, upstream pool, circuits, traffic figures, in-flight
counts, and the tasks that keep them current (every instance runs them, leader or not)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from ngm.dataplane.circuit import CircuitBreakers
from ngm.dataplane.router import Router
from ngm.dataplane.table import RoutingSnapshot, RoutingTable
from ngm.dataplane.traffic import RedisTraffic, TrafficStats
from ngm.dataplane.upstream import UpstreamPool
from ngm.errors import DatabaseUnavailable
from ngm.fallbacks import Fallback
from ngm.heap import deferred_full_collections, freeze_long_lived, release
from ngm.models.changes import ChangeCursor, prune_changes
from ngm.models.query import delete
from ngm.models.rows import utcnow
from ngm.nodes.events.bus import CIRCUIT_OPEN, HEALTH_PROBE, HEALTH_TRANSITION, KEYS_CHANGED, ROUTING_CHANGED
from ngm.nodes.events.store import make_event
from ngm.nodes.routing.nodes import strategy_nodes
from ngm.nodes.routing.snapshot import SnapshotLoader
from ngm.tasks import stop_tasks

log = logging.getLogger("ngm.routing")
HEARTBEAT_SECONDS = 5.0  # an instance's row in `instances` is renewed this often (with Redis)


class RoutingService:
    def __init__(self, ctx, refresh_every: float = 1.0, sync_every: float = 0.5):
        self.ctx = ctx
        self.refresh_every, self.sync_every = refresh_every, sync_every
        self.table = RoutingTable(refresh_every)
        self.loader = SnapshotLoader(ctx.database, ctx.keyring)
        self._refreshing = asyncio.Lock()  # one refresh at a time: an older one must not publish after a newer
        self.changes = ChangeCursor(ctx.settings.routing_resync_seconds)  # what the published snapshot holds
        self.pool = UpstreamPool(ctx.outbound.policy)
        self.breakers = CircuitBreakers(on_open=self._circuit_opened)
        self.stats = TrafficStats()
        self.redis_traffic = RedisTraffic(ctx.redis, ctx.settings.redis_namespace) if ctx.redis else None
        self.router = Router(self.table, self.pool, self.breakers, self.stats, ctx.inflight, strategy_nodes())
        self.router.limiter = ctx.limiter
        self._tasks: list[asyncio.Task] = []
        self.traffic_fallback = Fallback("traffic figures", "Redis unreachable: traffic figures leave out the "
                                                            "other instances' requests")

    async def start(self) -> None:
        await self.refresh_table()  # a failure is the refresh loop's to retry: the rest must start all the same
        await self.ctx.limiter.start()
        if self.ctx.redis is not None:
            await self._heartbeat()
        self._subscription = self.ctx.bus.subscribe(None)
        self._tasks = [asyncio.create_task(job(), name=f"ngm-routing-{job.__name__}")
                       for job in (self._refresh_loop, self._sync_loop, self._listen)]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        await self.ctx.limiter.stop()
        self._subscription.close()
        await self._sync_once()
        await self.ctx.inflight.leave()
        if self.ctx.redis is not None:
            try:
                await delete(self.ctx.database, "Instance", {"id": self.ctx.inflight.instance})
            except DatabaseUnavailable:
                pass
        await self.pool.close()

    async def _refresh_loop(self) -> None:
        """The change feed is polled every refresh_every seconds, or at once when invalidated."""
        while True:
            try:
                await asyncio.wait_for(self.table.changed.wait(), timeout=self.refresh_every)
            except asyncio.TimeoutError:
                pass
            self.table.changed.clear()
            await self.refresh_table()

    async def refresh_table(self) -> None:
        """Bring the table up to date: the organizations with a change not seen yet are re-read, and everything
        every resync_every seconds. What fails is logged (or, for an outage, said once elsewhere), not raised:
        routing goes on from the last snapshot, and what was not read is read on the next try."""
        async with self._refreshing:
            try:
                poll = await self.changes.poll(self.ctx.database)
                if poll.full:
                    with deferred_full_collections():
                        snapshot = await self.loader.load()
                    await prune_changes(self.ctx.database)
                elif poll.organizations:
                    snapshot = await self.loader.reload(self._table_snapshot(), poll.organizations)
                else:
                    self.changes.done(poll)
                    self.table.refreshed_at = time.monotonic()
                    return
                self.changes.done(poll)
                old = self._table_snapshot()
                self.table.publish(snapshot)
                if poll.full:
                    freeze_long_lived()  # it lives until the next full re-read: out of the collector's full passes
                    await release(old.gateways, old.targets, old.policies)  # nothing else holds the old one
            except DatabaseUnavailable:  # logged once per outage where it was found
                pass
            except Exception:
                log.exception("routing table refresh failed; routing on the last snapshot")

    def _table_snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(self.table.gateways, self.table.targets, self.table.policies)

    async def _sync_once(self) -> None:
        await self.ctx.inflight.publish()
        await self.ctx.inflight.read_elsewhere()
        if self.redis_traffic is not None:
            batch = self.stats.take_unflushed()
            try:
                if batch:
                    await self.redis_traffic.flush(batch)
                elif self.traffic_fallback.engaged:  # nothing to write: ask Redis whether it is back
                    await self.ctx.redis.ping()
                self.traffic_fallback.clear()
            except Exception as exc:  # figures are best effort; routing goes on
                self.traffic_fallback.engage(f"sharing failed: {type(exc).__name__}")
        else:
            self.stats.take_unflushed()
        self.stats.prune()

    async def _sync_loop(self) -> None:
        beat_at = 0.0
        while True:
            await asyncio.sleep(self.sync_every)
            await self._sync_once()
            if self.ctx.redis is not None and time.monotonic() >= beat_at:
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
                await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Say in the database that this instance is here (see Instance): a drain elsewhere then waits for this
        instance's in-flight counts even when Redis cannot carry them."""
        now = utcnow()
        try:
            await self.ctx.database.execute(
                "INSERT INTO instances (id, last_seen, created_at, updated_at) VALUES (:id, :now, :now, :now) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = :now, updated_at = :now",
                {"id": self.ctx.inflight.instance, "now": now})
            await delete(self.ctx.database, "Instance", {"last_seen": ("<", now - timedelta(hours=1))})
        except DatabaseUnavailable:  # said once where it was found
            pass

    async def _listen(self) -> None:
        while True:
            event = await self._subscription.get()
            kind, data = event["type"], event.get("data", {})
            if kind == HEALTH_TRANSITION:
                self.table.apply_transition(data)
            elif kind == HEALTH_PROBE:
                self.breakers.probe_result(data.get("gateway_id"), data.get("outcome") == "ok")
            elif kind == ROUTING_CHANGED:
                self.table.invalidate()
            elif kind == KEYS_CHANGED:
                self.ctx.auth.forget(data.get("key_id"), bool(data.get("revoked")))

    def _circuit_opened(self, gateway_id: str) -> None:
        gateway = self.table.gateways.get(gateway_id)
        log.warning("circuit opened for gateway %s after consecutive failures", gateway_id)
        if gateway is not None:
            asyncio.get_running_loop().create_task(self.ctx.bus.publish(make_event(
                CIRCUIT_OPEN, gateway.organization_id, {"gateway_id": gateway_id, "gateway_name": gateway.name})))

    async def traffic(self, deployment_ids: list[str], seconds: int) -> tuple[dict, bool]:
        """(figures per deployment, whether they cover every instance)."""
        if self.redis_traffic is not None:
            await self._sync_once()
            try:
                return await self.redis_traffic.window(deployment_ids, seconds, time.time()), True
            except Exception as exc:  # what this instance saw, said to be only that
                self.traffic_fallback.engage(f"reading failed: {type(exc).__name__}")
                return self.stats.window(deployment_ids, seconds), False
        return self.stats.window(deployment_ids, seconds), True
