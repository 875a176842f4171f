"""Median and p99 latency of gateway create, get and list (1,000 gateways) over REST, on SQLite and
PostgreSQL, next to a bare Nexus route and a no-op Nexus handler measured in the same run.

    .venv/bin/python bench/registry_latency.py [--gateways 1000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Sequential requests over one keep-alive connection (latency); then the list's and the bare route's
throughput with 64 concurrent clients (wrk, Debian's `wrk` package; skipped when it is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import NGM, ROOT, clean_env, free_port, print_table, start, stop, summary, wait_ready  # noqa: E402
from bench.router_throughput import wrk  # noqa: E402

CLIENTS = 64
THROUGHPUT: list[list] = []  # rows of the throughput table, filled as each server is measured


def throughput(label: str, url: str, headers: dict | None = None) -> None:
    if shutil.which("wrk"):
        result = wrk(url, 5, CLIENTS, headers)
        THROUGHPUT.append([label, f"{result['rps']:,.0f}", f"{result['p50']:.1f}", f"{result['p99']:.1f}",
                           str(result["errors"])])


def timed(client: httpx.Client, method: str, path: str, n: int, make_kwargs=lambda i: {}) -> list[float]:
    out = []
    for i in range(n):
        kwargs = make_kwargs(i)
        t = time.perf_counter()
        r = client.request(method, path(i) if callable(path) else path, **kwargs)
        out.append(time.perf_counter() - t)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code} {r.text[:200]}")
    return out


def mint_key(database_url: str) -> str:
    from ngm.models.database import open_database
    from ngm.nodes.auth.store import create_key

    async def go():
        db = await open_database(database_url)
        key, _ = await create_key(db, "bench", "org_owner", "bench", "bench")
        await db.close()
        return key

    return asyncio.run(go())


def analyze(database_url: str) -> None:
    """Planner statistics as autovacuum leaves them within a minute of a bulk load: without them PostgreSQL
    sorts all 1,000 gateways of the organization for each page (1.45 ms instead of 0.9 per page)."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    conn.cursor().execute("ANALYZE")
    conn.close()


def bench_backend(label: str, database_url: str, n: int, workdir: Path) -> list[list]:
    port = free_port()
    env = clean_env(NGM_DATA_DIR=str(workdir / label), NGM_DATABASE_URL=database_url, NGM_LOG_LEVEL="WARNING",
                    NGM_API_RATE_LIMIT="0",  # the per-key limit would refuse most of the throughput run
                    NGM_MONITOR="off")  # the API alone: no probes of the 1,000 gateways
    key = mint_key(database_url)
    proc = start([NGM, "serve", "--port", str(port)], env, workdir / f"{label}.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as c:
            timed(c, "GET", "/api/v1/gateways", 20)  # warm up
            creates = timed(c, "POST", "/api/v1/gateways", n, lambda i: {"json": {
                "name": f"gw-{i:05d}", "environment": ("production", "staging")[i % 2],
                "api_url": f"http://127.0.0.{1 + i % 200}:9/gw{i}", "api_key": f"key-{uuid.uuid4().hex}"}})
            if database_url.startswith("postgresql"):
                analyze(database_url)
            ids = [g["id"] for g in c.get("/api/v1/gateways", params={"limit": 500}).json()["items"]]
            gets = timed(c, "GET", lambda i: f"/api/v1/gateways/{random.choice(ids)}", n)
            lists = timed(c, "GET", "/api/v1/gateways", 200,
                          lambda i: {"params": {"limit": 50, "offset": (i * 50) % n}})
            filtered = timed(c, "GET", "/api/v1/gateways", 200, lambda i: {"params": {"environment": "staging"}})
        throughput(f"{label} list 50 of 1,000", f"{base}/api/v1/gateways?limit=50", {"X-API-Key": key})
    finally:
        stop(proc)
    return [[f"{label} {name}", *[f"{v:.2f}" for v in summary(s)]] for name, s in
            [("create", creates), ("get", gets), ("list 50 of 1,000", lists), ("list filtered", filtered)]]


def bench_baselines(n: int, workdir: Path) -> list[list]:
    port = free_port()
    proc = start([sys.executable, str(ROOT / "bench" / "bare_nexus.py"), str(port)], clean_env(),
                 workdir / "bare.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc, path="/bare")
        with httpx.Client(base_url=base, timeout=30) as c:
            timed(c, "GET", "/bare", 50)
            bare = timed(c, "GET", "/bare", n)
            handler = timed(c, "POST", "/workflows/noop/execute", n, lambda i: {"json": {"inputs": {"x": i}}})
        throughput("bare Nexus route (no work)", f"{base}/bare")
    finally:
        stop(proc)
    return [["bare Nexus route (no work)", *[f"{v:.2f}" for v in summary(bare)]],
            ["Nexus @app.handler (no work)", *[f"{v:.2f}" for v in summary(handler)]]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin URL; a throw-away database is created next to it ('' to skip)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ngm-bench-"))
    rows = bench_baselines(args.gateways, workdir)
    rows += bench_backend("sqlite", f"sqlite:///{workdir / 'bench.db'}", args.gateways, workdir)
    pg_name = None
    if args.pg:
        pg_name = f"ngm_bench_{uuid.uuid4().hex[:8]}"
        rows += bench_backend("postgresql", args.pg.rsplit("/", 1)[0] + "/" + pg_name, args.gateways, workdir)
    floor = float(rows[0][1])
    for row in rows:
        row.append(f"{float(row[1]) / floor:.1f}x")
    print_table(f"REST latency, {args.gateways} gateways, sequential keep-alive requests (ms)",
                ["request", "median", "p99", "median vs bare"], rows)
    if THROUGHPUT:
        bare = float(THROUGHPUT[0][1].replace(",", ""))
        for row in THROUGHPUT:
            row.append(f"{float(row[1].replace(',', '')) / bare:.2f}x")
        print_table(f"Throughput, {CLIENTS} concurrent clients, 5 s each (wrk)",
                    ["request", "requests/s", "p50 ms", "p99 ms", "non-2xx", "vs bare"], THROUGHPUT)
    if pg_name:
        import psycopg2

        conn = psycopg2.connect(args.pg)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
