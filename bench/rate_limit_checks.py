"""Checks per second and p50/p99 latency of the Redis rate-limit backend (one Lua script deciding three
scopes per request) with 1 and 50 concurrent callers, next to a raw INCR loop on the same client and Redis
and `redis-benchmark -t incr` when installed, all in the same run. Goal: >= 60% of the raw round-trip rate.
Then the router's check of the same three scopes (RateLimiter.check_then), where a busy caller's requests
are mostly admitted by leases of quota (leases.py) without a round trip.

    .venv/bin/python bench/rate_limit_checks.py [--seconds 5] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import pct, print_table  # noqa: E402
from ngm.dataplane.limits.algorithms import Scope  # noqa: E402
from ngm.dataplane.limits.limiter import Limits, RateLimiter  # noqa: E402
from ngm.dataplane.limits.redis_backend import RedisBackend  # noqa: E402


async def measure(call, callers: int, seconds: float) -> tuple[float, float, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def caller():
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return len(latencies) / elapsed, pct(ms, 50), pct(ms, 99)


def redis_benchmark(url: str, callers: int, requests: int) -> float | None:
    if not shutil.which("redis-benchmark"):
        return None
    parts = urlsplit(url)
    out = subprocess.run(["redis-benchmark", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
                          "-t", "incr", "-c", str(callers), "-n", str(requests), "-q"],
                         capture_output=True, text=True).stdout
    m = re.search(r"INCR: ([\d.]+) requests per second", out)
    return float(m.group(1)) if m else None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    pool = aioredis.BlockingConnectionPool.from_url(args.redis, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
    namespace = f"ngm-bench-{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(client, namespace)
    scopes = [Scope("gateway", "g:bench:w60000", 10**9, 60_000), Scope("agent", "a:bench:bot:w60000", 10**9, 60_000),
              Scope("user", "u:bench:key:w60000", 10**9, 60_000)]
    counter = f"{namespace}:incr"
    limiter = RateLimiter(RedisBackend(client, namespace))
    limits = Limits(10**9, 10**9, 10**9, 60_000)
    caller = SimpleNamespace(key_id="key", rate_limit=None)  # what the limiter reads of a principal

    async def router_check() -> None:
        answer = asyncio.get_running_loop().create_future()
        if limiter.check_then(caller, limits, "bench", "bot", None, False,
                              lambda lines, error: answer.set_result(lines)) is None:
            await answer
    rows = []
    try:
        await backend.check(scopes, "bench")  # load the script
        for callers in (1, 50):
            raw = await measure(lambda: client.incr(counter), callers, args.seconds)
            ours = await measure(lambda: backend.check(scopes, "bench"), callers, args.seconds)
            tool = redis_benchmark(args.redis, callers, 100_000 if callers == 1 else 300_000)
            rows.append([f"raw INCR loop, {callers} caller(s)", f"{raw[0]:,.0f}", f"{raw[1]:.3f}", f"{raw[2]:.3f}",
                         "1.00x"])
            rows.append([f"ngm limiter (3 scopes, Lua), {callers}", f"{ours[0]:,.0f}", f"{ours[1]:.3f}",
                         f"{ours[2]:.3f}", f"{ours[0] / raw[0]:.2f}x"])
            if tool:
                rows.append([f"redis-benchmark -t incr -c {callers}", f"{tool:,.0f}", "-", "-",
                             f"{tool / raw[0]:.2f}x"])
            router = await measure(router_check, callers, args.seconds)
            rows.append([f"router's check (leases), {callers}", f"{router[0]:,.0f}", f"{router[1]:.3f}",
                         f"{router[2]:.3f}", f"{router[0] / raw[0]:.2f}x"])
    finally:
        async for key in client.scan_iter(match=namespace + "*"):
            await client.delete(key)
        await client.aclose()
    print_table(f"Redis rate-limit checks, {args.seconds:g} s each ({args.redis})",
                ["", "checks/s", "p50 ms", "p99 ms", "vs raw INCR (same client)"], rows)


if __name__ == "__main__":
    asyncio.run(main())
