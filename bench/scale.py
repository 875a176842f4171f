"""What `ngm serve` costs as the installation grows: N gateways and N deployments across N/40 organizations.
For each size, the routing table kept by the change feed (only what changed is re-read; a full re-read every
NGM_ROUTING_RESYNC_SECONDS, 300 by default) next to the same server re-reading everything every second
(NGM_ROUTING_RESYNC_SECONDS=1: what ngm did before #25, but in pages), in the same run:

- idle (monitor off, no traffic): CPU, RSS, the event loop's worst stall seen by /healthz every 20 ms;
- a list's latency (p50 of 100);
- the router under the same fixed load at every size (ROUTER_RATE requests/s to one live stand-in gateway of
  the first organization): p50 and p99;
- one health sweep of the whole installation (every gateway but the live one on a closed port) by one and by two
  instances sharing the database and Redis (bench/health_sweep.py's workers), up to --sweep-max gateways.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--seconds 10] [--pg ADMIN_URL] [--sweep-max N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import NGM, ROOT, clean_env, free_port, pct, print_table, start, stop, wait_ready  # noqa: E402

PER_ORGANIZATION = 40
ROUTER_RATE = 200  # requests/s, the same at every size
AGENT = "scale-agent"


def build(database_url: str, n: int, live_url: str) -> str:
    """N gateways and deployments in N/40 organizations, and in the first one a gateway at `live_url` serving
    AGENT; returns an API key of the first organization."""
    from ngm.models.database import open_database
    from ngm.models.query import insert_many
    from ngm.models.rows import new_id, utcnow
    from ngm.nodes.auth.store import create_key

    async def go() -> str:
        db = await open_database(database_url)
        now = utcnow()
        for start_at in range(0, n, 5000):
            gateways, deployments = [], []
            for i in range(start_at, min(n, start_at + 5000)):
                org, gateway_id = f"org-{i // PER_ORGANIZATION:06d}", new_id()
                gateways.append({"id": gateway_id, "organization_id": org, "name": f"gw-{i:06d}",
                                 "environment": "production", "api_url": f"http://127.0.0.1:9/gw{i}",
                                 "health_status": "healthy"})
                deployments.append({"id": new_id(), "organization_id": org, "gateway_id": gateway_id,
                                    "agent_id": f"agent-{i % 7}", "agent_version": "v1", "weight": 50,
                                    "deployed_at": now, "deployed_by": "bench"})
            await insert_many(db, "Gateway", gateways)
            await insert_many(db, "GatewayDeployment", deployments)
        live = new_id()
        await insert_many(db, "Gateway", [{"id": live, "organization_id": "org-000000", "name": "live",
                                           "environment": "production", "api_url": live_url,
                                           "health_status": "healthy"}])
        await insert_many(db, "GatewayDeployment", [{"id": new_id(), "organization_id": "org-000000",
                                                     "gateway_id": live, "agent_id": AGENT, "agent_version": "v1",
                                                     "weight": 100, "deployed_at": now, "deployed_by": "bench"}])
        # as if the import were older than the feed's window (ngm.models.changes.LOOKBACK): the idle figures are
        # of an installation at rest, not of the minute after 2N changes (each poll counts those until then)
        await db.execute("DELETE FROM routing_changes")
        key, _ = await create_key(db, "org-000000", "org_owner", "bench", "bench")
        await db.close()
        return key

    return asyncio.run(go())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(label: str, database_url: str, key: str, seconds: float, workdir: Path, data: Path, resync: str
            ) -> list[str]:
    port = free_port()
    env = clean_env(NGM_DATA_DIR=str(data), NGM_DATABASE_URL=database_url, NGM_LOG_LEVEL="WARNING",
                    NGM_MONITOR="off", NGM_ROUTING_RESYNC_SECONDS=resync)
    proc = start([NGM, "serve", "--port", str(port)], env, workdir / f"{label}.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc, timeout=300)
        time.sleep(3)  # the start's own work done
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            stalls = []
            while time.monotonic() - t0 < seconds:  # one /healthz every 20 ms: its latency is the loop's stall
                t = time.perf_counter()
                client.get("/healthz")
                stalls.append(time.perf_counter() - t)
                time.sleep(0.02)
            idle = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            lists = []
            for i in range(100):
                t = time.perf_counter()
                client.get("/api/v1/gateways", params={"limit": 20, "offset": (i * 7) % 20})
                lists.append(time.perf_counter() - t)
        routed = asyncio.run(fixed_load(base, key, seconds))
        return [label, f"{idle * 100:.1f}%", f"{rss_mb(proc.pid):.0f}", f"{pct(stalls, 99) * 1000:.1f}",
                f"{max(stalls) * 1000:.1f}", f"{pct(lists, 50) * 1000:.2f}", f"{pct(routed, 50) * 1000:.2f}",
                f"{pct(routed, 99) * 1000:.2f}"]
    finally:
        stop(proc)


async def fixed_load(base: str, key: str, seconds: float) -> list[float]:
    """ROUTER_RATE requests/s for `seconds`, each started on time whatever the others do; their latencies."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=10,
                                 limits=httpx.Limits(max_connections=32)) as client:
        async def one() -> None:
            t = time.perf_counter()
            answer = await client.post(f"/api/v1/agents/{AGENT}/invoke/workflows/echo/execute", json={"inputs": {}})
            assert answer.status_code == 200, answer.text
            latencies.append(time.perf_counter() - t)

        for _ in range(20):  # warm the connections
            await one()
        latencies.clear()
        tasks, start = [], time.perf_counter()
        for i in range(int(ROUTER_RATE * seconds)):
            await asyncio.sleep(max(0.0, start + i / ROUTER_RATE - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def sweeps(database_url: str, data: Path) -> list[str]:
    """One sweep of every gateway by one instance, then by two (each its share); wall time and CPU per probe."""
    from bench.health_sweep import sweep_in_processes

    out = []
    for count in (1, 2):
        probed, _, wall, cpu = sweep_in_processes(database_url, data, count)
        out += [f"{wall:.1f} s", f"{cpu / probed * 1000:.2f} ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pg", default="", help="admin URL: measure on a throw-away PostgreSQL database too")
    parser.add_argument("--sweep-max", type=int, default=10_000, help="sweep installations up to this size")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ngm-scale-"))
    farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), "1", "0", "0"],
                            stdout=subprocess.PIPE, text=True)
    live_url = f"http://127.0.0.1:{json.loads(farm.stdout.readline())['healthy'][0]}"
    try:
        run_sizes(args, workdir, live_url)
    finally:
        farm.kill()


def run_sizes(args: argparse.Namespace, workdir: Path, live_url: str) -> None:
    rows, sweep_rows = [], []
    for n in (int(s) for s in args.sizes.split(",")):
        databases = [("sqlite", f"sqlite:///{workdir / f'scale-{n}.db'}")]
        if args.pg:
            databases.append(("postgresql", args.pg.rsplit("/", 1)[0] + f"/ngm_scale_{uuid.uuid4().hex[:8]}"))
        for name, url in databases:
            t = time.monotonic()
            key = build(url, n, live_url)
            print(f"{name}, {n:,} gateways and deployments built in {time.monotonic() - t:.0f} s", flush=True)
            data = workdir / f"data-{name}-{n}"  # one encryption key per database
            rows.append(measure(f"{name} {n:,}: change feed", url, key, args.seconds, workdir, data, "300"))
            rows.append(measure(f"{name} {n:,}: full re-read every 1 s", url, key, args.seconds, workdir, data, "1"))
            if n <= args.sweep_max:
                sweep_rows.append([f"{name} {n:,}", *sweeps(url, data)])
            if name == "postgresql":
                import psycopg2

                conn = psycopg2.connect(args.pg)
                conn.autocommit = True
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    print_table(f"ngm serve, monitor off, {args.seconds:g} s idle, then {ROUTER_RATE} routed requests/s for as long",
                ["installation", "idle CPU (of a core)", "RSS MB", "/healthz p99 ms", "max ms", "list p50 ms",
                 "routed p50 ms", "p99 ms"], rows)
    if sweep_rows:
        print_table("One health sweep of the whole installation (closed ports but one)",
                    ["installation", "one instance", "CPU per probe", "two instances", "CPU per probe"], sweep_rows)


if __name__ == "__main__":
    main()
