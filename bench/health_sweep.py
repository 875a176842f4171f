"""The health monitor against 1,000 stand-in gateways: half healthy, a quarter answering after 200 ms, a
quarter on closed ports. Prints the wall time of full sweeps against the probe timeout (goal: within
1.5 x) and against a bare sweep measured in the same run (the same GETs with aiohttp, as many at once, nothing
recorded: the floor a monitor could reach), and the monitor's CPU use while idle between sweeps.

    .venv/bin/python bench/health_sweep.py [--gateways 1000] [--pg postgresql://...] [--idle 15]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def bare_sweep(urls: list[str], concurrency: int) -> tuple[float, float]:
    """(wall s, CPU share) of GETting every URL's /health once with one aiohttp session, `concurrency` at once."""
    import aiohttp

    gate = asyncio.Semaphore(concurrency)

    async def get(session, url):
        async with gate:
            try:
                async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as r:
                    await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(get(session, u) for u in urls))
        wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu) / wall


async def run(database_url: str, n: int, idle_seconds: float, sweeps: int) -> list[list]:
    from ngm.config import Settings
    from ngm.context import AppContext
    from ngm.nodes.health.monitor import HealthMonitor

    quarter = n // 4
    farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), str(n - 2 * quarter),
                             str(quarter), "200"], stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(farm.stdout.readline())
        urls = [f"http://127.0.0.1:{p}" for p in ports["healthy"] + ports["slow"] + closed_ports(quarter)]
        data = Path(tempfile.mkdtemp(prefix="ngm-sweep-"))
        ctx = await AppContext.open(Settings.from_env({"NGM_DATA_DIR": str(data), "NGM_DATABASE_URL": database_url}))
        rows = []
        try:
            await populate(ctx, urls, interval=30.0)
            monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, ctx.outbound,
                                    concurrency=ctx.settings.monitor_concurrency)
            bare, bare_cpu = await bare_sweep(urls, ctx.settings.monitor_concurrency)
            rows.append([f"bare aiohttp sweep ({len(urls)} GETs)", f"{bare:.2f} s", f"{bare / TIMEOUT:.2f}x",
                         "1.00x", f"{bare_cpu * 100:.0f}%"])
            for i in range(sweeps):
                cpu, start = time.process_time(), time.perf_counter()
                probed = await monitor.sweep()
                wall = time.perf_counter() - start
                rows.append([f"sweep {i + 1} ({probed} probes)", f"{wall:.2f} s", f"{wall / TIMEOUT:.2f}x",
                             f"{wall / bare:.2f}x", f"{(time.process_time() - cpu) / wall * 100:.0f}%"])
            # idle: the real loop, everything probed, the next probes ~30 s away
            task = asyncio.create_task(_loop(monitor))
            await asyncio.sleep(1.0)
            cpu, start = time.process_time(), time.perf_counter()
            await asyncio.sleep(idle_seconds)
            wall = time.perf_counter() - start
            task.cancel()
            rows.append([f"idle {idle_seconds:.0f} s between sweeps", "-", "-", "-",
                         f"{(time.process_time() - cpu) / wall * 100:.1f}%"])
            counts = await ctx.database.rows(
                "SELECT health_status, count(*) AS n FROM gateways GROUP BY health_status ORDER BY health_status")
            print("  after the sweeps:", {r["health_status"]: r["n"] for r in counts})
        finally:
            await ctx.close()
        return rows
    finally:
        farm.kill()


async def _loop(monitor) -> None:
    while True:
        await asyncio.sleep(min(1.0, await monitor.step()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--idle", type=float, default=15.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin URL; a throw-away database is created next to it ('' to skip)")
    args = parser.parse_args()
    from ngm.config.logging import setup_logging

    setup_logging("WARNING")
    targets = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/sweep.db")]
    pg_name = f"ngm_sweep_{uuid.uuid4().hex[:8]}"
    if args.pg:
        targets.append(("postgresql", args.pg.rsplit("/", 1)[0] + "/" + pg_name))
    for label, url in targets:
        rows = asyncio.run(run(url, args.gateways, args.idle, args.sweeps))
        print_table(f"{label}: {args.gateways} gateways (1/2 healthy, 1/4 after 200 ms, 1/4 closed ports), "
                    f"probe timeout {TIMEOUT:.0f} s, goal: a sweep within {1.5 * TIMEOUT:.1f} s",
                    ["", "wall time", "vs timeout", "vs bare", "CPU"], rows)
    if args.pg:
        import psycopg2

        conn = psycopg2.connect(args.pg)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
