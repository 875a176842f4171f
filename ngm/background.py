"""Background services of `ngm serve`, started and stopped by the app's lifespan hooks (Nexus's
@app.scheduled never runs): the health monitor, webhook deliveries and history pruning. Instances sharing Redis
split the probing between them (ngm.nodes.health.share); the other jobs run only while this instance holds the
lease, so they are done once between them."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from ngm.errors import DatabaseUnavailable
from ngm.models.rows import utcnow
from ngm.tasks import stop_tasks

log = logging.getLogger("ngm.background")


class BackgroundServices:
    def __init__(self, ctx, *, prune_every: float = 600.0, dispatch_every: float = 0.5):
        from ngm.nodes.events.dispatcher import WebhookDispatcher
        from ngm.nodes.health.lease import instance_id
        from ngm.nodes.health.monitor import HealthMonitor
        from ngm.nodes.health.share import ProbeShare, RedisShare, WholeShare

        s = ctx.settings
        self.ctx = ctx
        self.lease = ctx.lease
        self.share: ProbeShare = (RedisShare(ctx.redis, f"{s.redis_namespace}:monitor-members", instance_id(),
                                             s.monitor_lease_seconds) if ctx.redis is not None else WholeShare())
        self.monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, ctx.probes, share=self.share,
                                     concurrency=s.monitor_concurrency, resync_every=s.routing_resync_seconds)
        self.dispatcher = WebhookDispatcher(ctx.database, ctx.keyring, ctx.outbound, s.webhook_max_attempts)
        self.prune_every, self.dispatch_every = prune_every, dispatch_every
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._share_changed = asyncio.Event()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._guard(name, job), name=f"ngm-{name}") for name, job in (
            ("lease", self._keep_lease), ("monitor", self._run_monitor), ("webhooks", self._run_dispatcher),
            ("prune", self._run_pruner), ("drains", self._run_drains), ("circuits", self._expedite_probes))]

    async def stop(self) -> None:
        self._stopping.set()
        await stop_tasks(self._tasks)
        await self.monitor.stop()
        await self.share.leave()
        await self.lease.release()

    async def _guard(self, name: str, job) -> None:
        """Keep a job alive: log and restart it after any unexpected error."""
        while not self._stopping.is_set():
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable:  # logged once per outage where it was found; try again shortly
                await self._sleep(1.0)
            except Exception:
                log.exception("background job %s failed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _keep_lease(self) -> None:
        """The only caller of hold() and renew(): the jobs below just ask whether they may work, the monitor
        which gateways are its share."""
        while not self._stopping.is_set():
            await self.lease.hold()
            generation = self.share.generation
            await self.share.renew()
            if self.share.generation != generation:
                self._share_changed.set()  # the monitor takes up its new share now, not at its next wake
            await self._sleep(self.lease.ttl / 3)

    async def _run_monitor(self) -> None:
        while not self._stopping.is_set():
            pause = min(1.0, await self.monitor.step())
            try:
                await asyncio.wait_for(self._share_changed.wait(), timeout=pause)
            except asyncio.TimeoutError:
                pass
            self._share_changed.clear()

    async def _run_dispatcher(self) -> None:
        while not self._stopping.is_set():
            if self.lease.may_work and await self.dispatcher.run_once():
                continue  # more may be due: go again at once
            await self._sleep(self.dispatch_every)

    async def _run_pruner(self) -> None:
        while not self._stopping.is_set():
            if self.lease.may_work:
                cutoff = utcnow() - timedelta(days=self.ctx.settings.health_history_days)
                started = time.monotonic()
                removed = await self.ctx.health_store.prune(cutoff)
                if removed:
                    log.info("pruned %d health checks older than %s in %.0f ms", removed, cutoff,
                             (time.monotonic() - started) * 1000)
            await self._sleep(self.prune_every)

    async def _run_drains(self) -> None:
        from ngm.nodes.deployments.drain import finish_drains

        while not self._stopping.is_set():
            if self.lease.may_work:
                await finish_drains(self.ctx)
            await self._sleep(0.5)

    async def _expedite_probes(self) -> None:
        """A gateway whose circuit opened (on any instance) is probed at once, not at its next interval."""
        from ngm.nodes.events.bus import CIRCUIT_OPEN

        subscription = self.ctx.bus.subscribe(None)
        try:
            while not self._stopping.is_set():
                event = await subscription.get(timeout=1.0)
                if event and event["type"] == CIRCUIT_OPEN:  # by the instance whose share it is
                    self.monitor.expedite(event["data"]["gateway_id"])
        finally:
            subscription.close()

    def status(self) -> dict:
        return {"leader": self.lease.may_work, "mode": self.lease.mode, "probing": self.share.mode,
                "instances": len(self.share.members), "gateways": len(self.monitor.gateways),
                "share": len(self.monitor.due), "probes": self.monitor.probes, "unrecorded": self.monitor.unrecorded}
