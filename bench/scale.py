"""What an idle `ngm serve` costs as the installation grows: N gateways and N deployments across N/40
organizations, the health monitor off, no traffic. For each size, the routing table kept by the change feed
(only what changed is re-read; a full re-read every NGM_ROUTING_RESYNC_SECONDS, 300 by default) next to the
same server re-reading everything every second (NGM_ROUTING_RESYNC_SECONDS=1: what ngm did before #25, but in
pages), in the same run: idle CPU, RSS, the event loop's worst stall seen by /healthz, and a list's latency.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--seconds 10] [--pg ADMIN_URL]

Not measured yet (#25 asks for them): the router under a fixed load, and sweeps with one and two instances.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import NGM, clean_env, free_port, pct, print_table, start, stop, wait_ready  # noqa: E402

PER_ORGANIZATION = 40


def build(database_url: str, n: int) -> str:
    """N gateways and deployments in N/40 organizations; returns an API key of the first organization."""
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


def measure(label: str, database_url: str, key: str, seconds: float, workdir: Path, resync: str) -> list[str]:
    port = free_port()
    env = clean_env(NGM_DATA_DIR=str(workdir / label), NGM_DATABASE_URL=database_url, NGM_LOG_LEVEL="WARNING",
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
        return [label, f"{idle * 100:.1f}%", f"{rss_mb(proc.pid):.0f}", f"{pct(stalls, 0.99) * 1000:.1f}",
                f"{max(stalls) * 1000:.1f}", f"{pct(lists, 0.5) * 1000:.2f}"]
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pg", default="", help="admin URL: measure on a throw-away PostgreSQL database too")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ngm-scale-"))
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        databases = [("sqlite", f"sqlite:///{workdir / f'scale-{n}.db'}")]
        if args.pg:
            databases.append(("postgresql", args.pg.rsplit("/", 1)[0] + f"/ngm_scale_{uuid.uuid4().hex[:8]}"))
        for name, url in databases:
            t = time.monotonic()
            key = build(url, n)
            print(f"{name}, {n:,} gateways and deployments built in {time.monotonic() - t:.0f} s", flush=True)
            rows.append(measure(f"{name} {n:,}: change feed", url, key, args.seconds, workdir, "300"))
            rows.append(measure(f"{name} {n:,}: full re-read every 1 s", url, key, args.seconds, workdir, "1"))
            if name == "postgresql":
                import psycopg2

                conn = psycopg2.connect(args.pg)
                conn.autocommit = True
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    print_table(f"Idle ngm serve, monitor off, {args.seconds:g} s each",
                ["installation", "CPU (of a core)", "RSS MB", "/healthz p99 ms", "max ms", "list p50 ms"], rows)


if __name__ == "__main__":
    main()
