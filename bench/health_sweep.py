"""The health monitor against stand-in gateways: half healthy, a quarter answering after 200 ms, a quarter on
closed ports. Prints the wall time and CPU of full sweeps against the probe timeout (goal, #25: two instances
sweep 8,000 gateways within 0.6x of it together), for:

- the monitor probing with aiohttp, as before #25 (the baseline, in the same run);
- the monitor as it is (its probe client, one instance);
- two instances in two processes sharing the database and Redis, each sweeping its share at the same moment;

and the monitor's CPU use while idle between sweeps. Every process freezes what it built at start, as `ngm serve`
does.

    .venv/bin/python bench/health_sweep.py [--gateways 8000] [--pg postgresql://...] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, print_table  # noqa: E402

TIMEOUT = 5.0
REDIS_URL = "redis://127.0.0.1:6379/0"


def closed_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def populate(ctx, urls: list[str], interval: float) -> None:
    from ngm.models.rows import new_id, utcnow

    now = utcnow()
    await ctx.database.many(
        "INSERT INTO gateways (id, organization_id, name, environment, gateway_type, api_url, status, health_status, "
        "health_check_interval, health_check_timeout, healthy_threshold, unhealthy_threshold, degraded_latency_ms, "
        "health_grace_period, health_successes, health_failures, health_slow, health_fast, created_at, updated_at) "
        "VALUES (:id, 'bench', :name, 'production', 'shared', :url, 'active', 'unknown', :interval, :timeout, 2, 3, "
        "1000, 0, 0, 0, 0, 0, :now, :now)",
        [{"id": new_id(), "name": f"gw-{i:05d}", "url": url, "interval": interval, "timeout": TIMEOUT, "now": now}
         for i, url in enumerate(urls)])


class AiohttpProbes:
    """The probe client before #25: aiohttp, through the outbound client webhooks still use."""

    def __init__(self, outbound):
        self.outbound = outbound

    async def get(self, url: str, headers: dict, *, timeout: float):
        return await self.outbound.request("GET", url, headers=headers, timeout=timeout, max_body=64 * 1024)


async def open_ctx(database_url: str, data: Path, redis: bool = False):
    from ngm.config import Settings
    from ngm.context import AppContext

    env = {"NGM_DATA_DIR": str(data), "NGM_DATABASE_URL": database_url}
    if redis:
        env["NGM_REDIS_URL"] = REDIS_URL
    return await AppContext.open(Settings.from_env(env))


async def timed_sweep(monitor) -> tuple[float, float, int]:
    cpu, start = time.process_time(), time.perf_counter()
    probed = await monitor.sweep()
    wall = time.perf_counter() - start
    return wall, time.process_time() - cpu, probed


async def run(database_url: str, n: int, idle_seconds: float, sweeps: int) -> list[list]:
    from ngm.nodes.health.monitor import HealthMonitor

    quarter = n // 4
    farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), str(n - 2 * quarter),
                             str(quarter), "200"], stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(farm.stdout.readline())
        urls = [f"http://127.0.0.1:{p}" for p in ports["healthy"] + ports["slow"] + closed_ports(quarter)]
        data = Path(tempfile.mkdtemp(prefix="ngm-sweep-"))
        ctx = await open_ctx(database_url, data)
        rows = []
        try:
            await populate(ctx, urls, interval=30.0)
            gc.collect()
            gc.freeze()
            for label, client in (("aiohttp probes (before #25)", AiohttpProbes(ctx.outbound)),
                                  ("one instance", ctx.probes)):
                monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, client,
                                        concurrency=ctx.settings.monitor_concurrency)
                for i in range(sweeps):
                    wall, cpu, probed = await timed_sweep(monitor)
                    rows.append([f"{label}, sweep {i + 1}", probed, f"{wall:.2f} s", f"{wall / TIMEOUT:.2f}x",
                                 f"{cpu / probed * 1000:.3f} ms"])
            # idle: the real loop, everything probed, the next probes ~30 s away (before the two instances' sweeps,
            # which take long enough for them to come due)
            task = asyncio.create_task(_loop(monitor))
            await asyncio.sleep(1.0)
            cpu, start = time.process_time(), time.perf_counter()
            await asyncio.sleep(idle_seconds)
            wall = time.perf_counter() - start
            task.cancel()
            rows.append([f"one instance idle {idle_seconds:.0f} s", "-", "-", "-",
                         f"{(time.process_time() - cpu) / wall * 100:.1f}% CPU"])
            for i in range(sweeps):
                rows.append(["two instances, sweep " + str(i + 1), *two_instances(database_url, data)])
        finally:
            await ctx.close()
        return rows
    finally:
        farm.kill()


def sweep_in_processes(database_url: str, data: Path, count: int) -> tuple[int, list[int], float, float]:
    """`count` processes sharing the database and Redis, each sweeping its share once all see each other.
    Returns (probes, probes per process, wall time from the first start to the last end, CPU seconds of all)."""
    key = f"ngm-bench:{uuid.uuid4().hex}:members"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", database_url, str(data), key, str(count)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["probed"] for r in results), [r["probed"] for r in results], wall, sum(r["cpu"] for r in results)


def two_instances(database_url: str, data: Path) -> list:
    probed, each, wall, cpu = sweep_in_processes(database_url, data, 2)
    return [f"{probed} ({' + '.join(map(str, each))})", f"{wall:.2f} s", f"{wall / TIMEOUT:.2f}x",
            f"{cpu / probed * 1000:.3f} ms"]


async def worker(database_url: str, data: str, key: str, count: str) -> None:
    from ngm.nodes.health.lease import instance_id
    from ngm.nodes.health.monitor import HealthMonitor
    from ngm.nodes.health.share import RedisShare

    ctx = await open_ctx(database_url, Path(data), redis=True)
    share = RedisShare(ctx.redis, key, instance_id(), ttl=600.0)
    while len(share.members) < int(count):
        await share.renew()
        await asyncio.sleep(0.05)
    monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, ctx.probes, share=share,
                            concurrency=ctx.settings.monitor_concurrency)
    await monitor.refresh()
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start, cpu = time.time(), time.process_time()
    probed = await monitor.sweep()
    print(json.dumps({"start": start, "end": time.time(), "cpu": time.process_time() - cpu, "probed": probed}),
          flush=True)
    await share.leave()
    await ctx.close()


async def _loop(monitor) -> None:
    while True:
        await asyncio.sleep(min(1.0, await monitor.step()))


def main() -> None:
    import uvloop  # as `ngm serve` runs

    from ngm.config.logging import setup_logging

    setup_logging("WARNING")
    if sys.argv[1:2] == ["--worker"]:
        uvloop.run(worker(*sys.argv[2:6]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, default=8000)
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin URL; a throw-away database is created next to it ('' to skip)")
    args = parser.parse_args()
    targets = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/sweep.db")]
    pg_name = f"ngm_sweep_{uuid.uuid4().hex[:8]}"
    if args.pg:
        targets.append(("postgresql", args.pg.rsplit("/", 1)[0] + "/" + pg_name))
    for label, url in targets:
        rows = uvloop.run(run(url, args.gateways, args.idle, args.sweeps))
        print_table(f"{label}: {args.gateways} gateways (1/2 healthy, 1/4 after 200 ms, 1/4 closed ports), probe "
                    f"timeout {TIMEOUT:.0f} s; goal: two instances within {0.6 * TIMEOUT:.1f} s (0.6x), CPU per probe "
                    "at most half the baseline's",
                    ["", "probes", "wall time", "vs timeout", "CPU per probe"], rows)
    if args.pg:
        import psycopg2

        conn = psycopg2.connect(args.pg)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
