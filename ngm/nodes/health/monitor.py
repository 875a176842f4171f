"""The background health monitor.

Each gateway has its own due time (interval ± 10% jitter; first probes spread over the first interval), kept in a
heap, so one slow gateway never delays another and finding what is due costs nothing per idle gateway: every
probe is its own task under a concurrency bound, with its own timeout. Results are recorded in batches every
quarter second. The gateway list follows the change feed (ngm.models.changes): only organizations with a change
are re-read, everything every resync period, in pages with the loop served between them. Instances sharing Redis
probe only their share of the gateways (ngm.nodes.health.share); when the members change, the list is re-read
in full, so a gateway taken over is scheduled from its last check as the database has it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from datetime import datetime

from ngm.errors import DatabaseUnavailable
from ngm.heap import SLICE, deferred_full_collections, freeze_long_lived
from ngm.models.changes import ChangeCursor
from ngm.models.rows import utcnow
from ngm.nodes.gateways.validation import base_url, health_url
from ngm.nodes.health.probe import ProbeClient, ProbeResult, probe
from ngm.nodes.health.share import ProbeShare, WholeShare, point
from ngm.tasks import stop_tasks

log = logging.getLogger("ngm.monitor")
RECORD_BATCH = 200  # probe results recorded per transaction
_PROBE_SETTINGS = ("api_url", "api_port", "health_check_url", "health_check_interval")  # a change reschedules
_STATE_FIELDS = ("health_status", "health_successes", "health_failures", "health_slow", "health_fast",
                 "last_health_check")


class HealthMonitor:
    def __init__(self, store, recorder, keyring, client: ProbeClient, *, share: ProbeShare | None = None,
                 concurrency: int = 256, refresh_every: float = 2.0, resync_every: float = 300.0,
                 flush_every: float = 0.25, jitter: float = 0.1, clock=time.monotonic):
        self.store, self.recorder, self.keyring, self.client = store, recorder, keyring, client
        self.share: ProbeShare = share or WholeShare()
        self.refresh_every, self.flush_every, self.jitter, self.clock = refresh_every, flush_every, jitter, clock
        self.changes = ChangeCursor(resync_every)
        self._sem = asyncio.Semaphore(concurrency)
        self.gateways: dict[str, dict] = {}  # every monitored gateway, this instance's share or not
        self._of_org: dict[str, set[str]] = {}
        self._position: dict[str, int] = {}  # on the share's ring
        self._generation = self.share.generation
        self.due: dict[str, float] = {}  # this instance's share: when each is probed next
        self._heap: list[tuple[float, str]] = []  # (due, id); an entry no longer in `due` is skipped
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._buffer: list[tuple[dict, ProbeResult]] = []
        self._refreshed_at = float("-inf")
        self._flushed_at = 0.0
        self.probes = 0
        self.unrecorded = 0  # results dropped while the database was unreachable

    # ------------------------------------------------------------ gateway list

    async def refresh(self) -> None:
        """Follow the change feed: re-read what changed, or everything when a resync is due."""
        if self.share.generation != self._generation:
            self._generation = self.share.generation
            self.changes.resync()
        poll = await self.changes.poll(self.store.database)
        if poll.full:
            fresh: dict[str, dict] = {}
            with deferred_full_collections():
                async for page in self.store.monitored_gateway_pages():
                    self._take(page, fresh)
                    await asyncio.sleep(0)  # serve the loop between pages
                await self._replace(set(self.gateways), fresh)
            freeze_long_lived()  # the rows live until the next full re-read
        elif poll.organizations:
            fresh = {}
            self._take(await self.store.monitored_gateways_of(sorted(poll.organizations)), fresh)
            await self._replace({g for org in poll.organizations for g in self._of_org.get(org, ())}, fresh)
        self.changes.done(poll)
        self._refreshed_at = self.clock()

    def _take(self, rows: list[dict], into: dict[str, dict]) -> None:
        for row in rows:
            known = self.gateways.get(row["id"])
            if known is not None and _newer(known.get("last_health_check"), row.get("last_health_check")):
                row.update({k: known[k] for k in _STATE_FIELDS})  # our own results may not be flushed yet
            into[row["id"]] = row

    async def _replace(self, old: set[str], fresh: dict[str, dict]) -> None:
        """The gateways in `old` are replaced by `fresh`; what this instance probes follows. In slices: a full
        re-read of 100,000 gateways would otherwise hold the loop for a quarter of a second."""
        now_mono, now_wall = self.clock(), utcnow()
        for n, gone in enumerate(old - fresh.keys(), 1):
            row = self.gateways.pop(gone, None)
            if row is not None:
                self._of_org.get(row["organization_id"], set()).discard(gone)
            self.due.pop(gone, None)
            self._position.pop(gone, None)
            if n % SLICE == 0:
                await asyncio.sleep(0)
        for n, (gid, row) in enumerate(fresh.items(), 1):
            if n % SLICE == 0:
                await asyncio.sleep(0)
            known = self.gateways.get(gid)
            if known is not None and known["organization_id"] != row["organization_id"]:
                self._of_org.get(known["organization_id"], set()).discard(gid)
            self.gateways[gid] = row
            self._of_org.setdefault(row["organization_id"], set()).add(gid)
            position = self._position.get(gid)
            if position is None:
                position = self._position[gid] = point(gid)
            if not self.share.owns(position):
                self.due.pop(gid, None)
            elif gid not in self.due:
                self._schedule(gid, now_mono + self._first_delay(row, now_wall))
            elif known is not None and any(known.get(k) != row.get(k) for k in _PROBE_SETTINGS):
                # probed elsewhere or every so often now: from the new settings, not the old due time
                due = self.due[gid]
                self._schedule(gid, now_mono if known.get("health_check_interval") == row.get(
                    "health_check_interval") else min(due, now_mono + self._first_delay(row, now_wall)))
        for org in [o for o, ids in self._of_org.items() if not ids]:
            del self._of_org[org]

    def _first_delay(self, row: dict, now: datetime) -> float:
        interval = float(row["health_check_interval"])
        spread = min(interval, 5.0)  # a cold start is spread over this, instead of a thundering herd
        last = row.get("last_health_check")
        if last is not None:
            remaining = interval - (now - last).total_seconds()
            if remaining > 0:
                return remaining
            spread /= 4  # overdue (taken over from an instance that died): soon, but not all at once
        return random.uniform(0, spread)

    def _schedule(self, gateway_id: str, when: float) -> None:
        self.due[gateway_id] = when
        heapq.heappush(self._heap, (when, gateway_id))

    def expedite(self, gateway_id: str) -> None:
        """Probe now, if this instance probes it."""
        if gateway_id in self.due:
            self._schedule(gateway_id, self.clock())

    # ------------------------------------------------------------ probing

    async def probe_gateway(self, gateway: dict) -> ProbeResult:
        key = None
        if gateway.get("api_key_encrypted"):
            try:
                key = self.keyring.decrypt(gateway["api_key_encrypted"])
            except Exception:  # a key we cannot read is a configuration problem, not a crash
                log.error("gateway %s: stored API key cannot be decrypted; probing without it", gateway["id"])
        return await probe(self.client, health_url(gateway), key, timeout=float(gateway["health_check_timeout"]),
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
        now, heap, due = self.clock(), self._heap, self.due
        while heap and heap[0][0] <= now:
            when, gid = heapq.heappop(heap)
            if due.get(gid) != when:
                continue  # rescheduled or no longer ours
            gateway = self.gateways[gid]
            interval = float(gateway["health_check_interval"])
            if gid in self._inflight:  # still probing (its timeout is longer than its interval): look again later
                self._schedule(gid, now + min(interval, 1.0))
                continue
            self._schedule(gid, now + interval * random.uniform(1 - self.jitter, 1 + self.jitter))
            self._inflight.add(gid)
            task = asyncio.create_task(self._probe_and_buffer(gateway))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Record what the probes found, RECORD_BATCH results per transaction (each a few ms of the loop)."""
        self._flushed_at = self.clock()
        pending, self._buffer = self._buffer, []  # what came in by now; later results wait for the next flush
        for start in range(0, len(pending), RECORD_BATCH):
            # Step from the current row: a refresh may have replaced the one the probe started with.
            batch = [(self.gateways.get(g["id"], g), result) for g, result in pending[start:start + RECORD_BATCH]]
            try:
                await self.recorder.record(batch, source="monitor")
            except DatabaseUnavailable:  # logged once per outage; these results are not kept, the next ones are
                self.unrecorded += len(batch)
            except Exception:
                log.exception("recording %d probe results failed", len(batch))

    async def step(self) -> float:
        """One turn of the loop; returns how long to sleep before the next."""
        now = self.clock()
        if now - self._refreshed_at >= self.refresh_every or self.share.generation != self._generation:
            await self.refresh()
        self.start_due()
        if self._buffer and now - self._flushed_at >= self.flush_every:
            await self.flush()
        wake = self._refreshed_at + self.refresh_every
        if self._heap:
            wake = min(wake, self._heap[0][0])
        if self._buffer or self._inflight:
            wake = min(wake, self.clock() + self.flush_every)
        return max(0.01, wake - self.clock())

    async def sweep(self) -> int:
        """Probe every gateway of this instance's share once now and record the results (benchmarks, tests)."""
        await self.refresh()
        for gid in self.due:
            self._schedule(gid, self.clock())
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
