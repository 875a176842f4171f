"""The background health monitor.

Each gateway has its own due time (interval ± 10% jitter; first probes spread over the first interval),
so one slow gateway never delays another: every probe is its own task under a concurrency bound, with
its own timeout. Results are recorded in batches every quarter second. The gateway list is re-read
every few seconds (new, changed, deactivated and deleted gateways); between due times the loop sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime

from ngm.errors import DatabaseUnavailable
from ngm.models.rows import utcnow
from ngm.nodes.gateways.validation import base_url, health_url
from ngm.nodes.health.probe import ProbeResult, probe
from ngm.tasks import stop_tasks

log = logging.getLogger("ngm.monitor")
_STATE_FIELDS = ("health_status", "health_successes", "health_failures", "health_slow", "health_fast",
                 "last_health_check")


class HealthMonitor:
    def __init__(self, store, recorder, keyring, outbound, *, concurrency: int = 256, refresh_every: float = 2.0,
                 flush_every: float = 0.25, jitter: float = 0.1, clock=time.monotonic):
        self.store, self.recorder, self.keyring, self.outbound = store, recorder, keyring, outbound
        self.refresh_every, self.flush_every, self.jitter, self.clock = refresh_every, flush_every, jitter, clock
        self._sem = asyncio.Semaphore(concurrency)
        self.gateways: dict[str, dict] = {}
        self.due: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._buffer: list[tuple[dict, ProbeResult]] = []
        self._refreshed_at = float("-inf")
        self._flushed_at = 0.0
        self.probes = 0
        self.unrecorded = 0  # results dropped while the database was unreachable

    # ------------------------------------------------------------ gateway list

    async def refresh(self) -> None:
        rows = await self.store.monitored_gateways()
        now_mono, now_wall = self.clock(), utcnow()
        fresh = {}
        for row in rows:
            known = self.gateways.get(row["id"])
            if known is not None and _newer(known.get("last_health_check"), row.get("last_health_check")):
                row.update({k: known[k] for k in _STATE_FIELDS})  # our own results may not be flushed yet
            fresh[row["id"]] = row
            if row["id"] not in self.due:
                self.due[row["id"]] = now_mono + self._first_delay(row, now_wall)
        for gone in set(self.due) - set(fresh):
            self.due.pop(gone, None)
        self.gateways = fresh
        self._refreshed_at = now_mono

    def _first_delay(self, row: dict, now: datetime) -> float:
        interval = float(row["health_check_interval"])
        last = row.get("last_health_check")
        if last is not None:
            remaining = interval - (now - last).total_seconds()
            if remaining > 0:
                return remaining
        return random.uniform(0, min(interval, 5.0))  # spread a cold start instead of a thundering herd

    def expedite(self, gateway_id: str) -> None:
        if gateway_id in self.due:
            self.due[gateway_id] = self.clock()

    def reset(self) -> None:
        """Forget everything (lease lost): the next holder starts from the database."""
        self.gateways.clear()
        self.due.clear()
        self._refreshed_at = float("-inf")

    # ------------------------------------------------------------ probing

    async def probe_gateway(self, gateway: dict) -> ProbeResult:
        key = None
        if gateway.get("api_key_encrypted"):
            try:
                key = self.keyring.decrypt(gateway["api_key_encrypted"])
            except Exception:  # a key we cannot read is a configuration problem, not a crash
                log.error("gateway %s: stored API key cannot be decrypted; probing without it", gateway["id"])
        return await probe(self.outbound, health_url(gateway), key, timeout=float(gateway["health_check_timeout"]),
                           key_origin=base_url(gateway))

    async def _probe_and_buffer(self, gateway: dict) -> None:
        try:
            async with self._sem:
                result = await self.probe_gateway(gateway)
            self._buffer.append((gateway, result))
            self.probes += 1
        except Exception:
            log.exception("probe of gateway %s failed", gateway["id"])
        finally:
            self._inflight.discard(gateway["id"])

    def start_due(self) -> None:
        now = self.clock()
        for gid, due in list(self.due.items()):
            if due > now or gid in self._inflight or gid not in self.gateways:
                continue
            gateway = self.gateways[gid]
            interval = float(gateway["health_check_interval"])
            self.due[gid] = now + interval * random.uniform(1 - self.jitter, 1 + self.jitter)
            self._inflight.add(gid)
            task = asyncio.create_task(self._probe_and_buffer(gateway))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        self._flushed_at = self.clock()
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        # Step from the current row: a refresh may have replaced the one the probe started with.
        batch = [(self.gateways.get(g["id"], g), result) for g, result in batch]
        try:
            await self.recorder.record(batch, source="monitor")
        except DatabaseUnavailable:  # logged once per outage; these results are not kept, the next ones are
            self.unrecorded += len(batch)
        except Exception:
            log.exception("recording %d probe results failed", len(batch))

    async def step(self) -> float:
        """One turn of the loop; returns how long to sleep before the next."""
        now = self.clock()
        if now - self._refreshed_at >= self.refresh_every:
            await self.refresh()
        self.start_due()
        if self._buffer and now - self._flushed_at >= self.flush_every:
            await self.flush()
        wake = [self._refreshed_at + self.refresh_every]
        wake += [d for gid, d in self.due.items() if gid not in self._inflight]
        if self._buffer or self._inflight:
            wake.append(self.clock() + self.flush_every)
        return max(0.01, min(wake) - self.clock())

    async def sweep(self) -> int:
        """Probe every monitored gateway once now and record the results (benchmarks, tests)."""
        await self.refresh()
        for gid in self.gateways:
            self.due[gid] = self.clock()
        self.start_due()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        count = len(self._buffer)
        await self.flush()
        return count

    async def stop(self) -> None:
        await stop_tasks(list(self._tasks))
        await self.flush()


def _newer(ours, theirs) -> bool:
    return ours is not None and (theirs is None or ours >= theirs)
