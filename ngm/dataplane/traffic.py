"""Traffic figures per deployment over recent windows: requests, errors, latency percentiles.

Counts go into 10-second buckets (kept 15 minutes) with a log-scale latency histogram (16 buckets per
decade from 0.1 ms, so a percentile is within 15%). Buckets from several instances add up, which is how
they are merged through Redis.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

BUCKET_SECONDS = 10
KEEP_SECONDS = 15 * 60
_PER_DECADE = 16
_BASE_MS = 0.1
HIST_SIZE = 6 * _PER_DECADE  # 0.1 ms .. 100 s

_K = TypeVar("_K")


def histogram_index(ms: float) -> int:
    if ms <= _BASE_MS:
        return 0
    return min(HIST_SIZE - 1, int(math.log10(ms / _BASE_MS) * _PER_DECADE) + 1)


def histogram_upper_ms(index: int) -> float:
    return _BASE_MS * 10 ** (index / _PER_DECADE)


def percentile_from_histogram(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = math.ceil(q / 100 * total), 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return round(histogram_upper_ms(index), 2)
    return None


class Bucket:
    __slots__ = ("requests", "errors", "rejected", "hist")

    def __init__(self) -> None:
        self.requests = self.errors = self.rejected = 0
        self.hist: dict[int, int] = defaultdict(int)

    def add(self, other: "Bucket") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.rejected += other.rejected
        for k, v in other.hist.items():
            self.hist[k] += v


class TrafficStats:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.buckets: dict[str, dict[int, Bucket]] = defaultdict(dict)  # deployment -> bucket start -> Bucket
        self.unflushed: dict[tuple[str, int], Bucket] = {}  # what has not reached Redis yet
        # deployment -> (bucket start, the unflushed dict it belongs to, its two current buckets): the
        # router records every request, and finding both buckets by key each time cost more than counting
        self._current: dict[str, tuple[int, dict[tuple[str, int], Bucket], Bucket, Bucket]] = {}

    def _bucket(self, store: dict[_K, Bucket], key: _K) -> Bucket:
        b = store.get(key)
        if b is None:
            b = store[key] = Bucket()
        return b

    def record(self, deployment_id: str, latency_ms: float, error: bool) -> None:
        start = int(self.clock()) // BUCKET_SECONDS * BUCKET_SECONDS
        current = self._current.get(deployment_id)
        if current is None or current[0] != start or current[1] is not self.unflushed:
            current = self._current[deployment_id] = (
                start, self.unflushed, self._bucket(self.buckets[deployment_id], start),
                self._bucket(self.unflushed, (deployment_id, start)))
        index = histogram_index(latency_ms)
        for b in current[2:]:
            b.requests += 1
            b.errors += error
            b.hist[index] += 1

    def record_rejected(self, deployment_id: str) -> None:
        start = int(self.clock()) // BUCKET_SECONDS * BUCKET_SECONDS
        for b in (self._bucket(self.buckets[deployment_id], start),
                  self._bucket(self.unflushed, (deployment_id, start))):
            b.rejected += 1

    def prune(self) -> None:
        oldest = self.clock() - KEEP_SECONDS
        for per in self.buckets.values():
            for start in [s for s in per if s < oldest]:
                del per[start]

    def take_unflushed(self) -> dict[tuple[str, int], Bucket]:
        out, self.unflushed = self.unflushed, {}
        return out

    def window(self, deployment_ids: list[str], seconds: int) -> dict[str, Bucket]:
        since = self.clock() - seconds
        out = {}
        for dep in deployment_ids:
            total = Bucket()
            for start, b in self.buckets.get(dep, {}).items():
                if start + BUCKET_SECONDS > since:
                    total.add(b)
            out[dep] = total
        return out


def summarize(bucket: Bucket, seconds: int) -> dict[str, Any]:
    return {"requests": bucket.requests, "errors": bucket.errors, "rate_limited": bucket.rejected,
            "error_rate": round(bucket.errors / bucket.requests, 4) if bucket.requests else 0.0,
            "requests_per_second": round(bucket.requests / seconds, 2),
            "latency_ms": {q: percentile_from_histogram(bucket.hist, n) for q, n in (("p50", 50), ("p95", 95),
                                                                                    ("p99", 99))}}


class RedisTraffic:
    """Buckets of every instance, added up in Redis hashes (one per deployment and 10-second bucket)."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis, self.prefix = redis, f"{namespace}:traffic:"

    async def flush(self, buckets: dict[tuple[str, int], Bucket]) -> None:
        if not buckets:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for (dep, start), b in buckets.items():
                key = f"{self.prefix}{dep}:{start}"
                pipe.hincrby(key, "requests", b.requests)
                pipe.hincrby(key, "errors", b.errors)
                pipe.hincrby(key, "rejected", b.rejected)
                for index, count in b.hist.items():
                    pipe.hincrby(key, f"h{index}", count)
                pipe.expire(key, KEEP_SECONDS + 60)
            await pipe.execute()

    async def window(self, deployment_ids: list[str], seconds: int, now: float) -> dict[str, Bucket]:
        first = int(now - seconds) // BUCKET_SECONDS * BUCKET_SECONDS
        starts = list(range(first, int(now) + 1, BUCKET_SECONDS))
        async with self.redis.pipeline(transaction=False) as pipe:
            for dep in deployment_ids:
                for start in starts:
                    pipe.hgetall(f"{self.prefix}{dep}:{start}")
            answers = await pipe.execute()
        out, i = {}, 0
        for dep in deployment_ids:
            total = Bucket()
            for _ in starts:
                fields = {k.decode(): int(v) for k, v in answers[i].items()}
                i += 1
                total.requests += fields.pop("requests", 0)
                total.errors += fields.pop("errors", 0)
                total.rejected += fields.pop("rejected", 0)
                for name, count in fields.items():
                    total.hist[int(name[1:])] += count
            out[dep] = total
        return out
