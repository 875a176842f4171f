"""Requests per second and p50/p99 latency with 16 concurrent clients (wrk) against a trivial upstream on
127.0.0.1: (a) the upstream directly, (b) through ngm's router (routing on; rate limits on once configured;
one process, then one worker per core as nginx runs),
(c) a minimal FastAPI + httpx forwarder, (d) nginx proxying to the same upstream when nginx is installed
(measured beside every round of the router's runs: the router's ratio to nginx compares runs close in time),
(e) uvicorn + aiohttp's client, the alternative measured for the router's HTTP client, (f) uvicorn
serving a bare ASGI app without forwarding: the ceiling of any Python ASGI gateway on this server stack,
and (g) a bare proxy on asyncio protocols and httptools (parse, forward, answer, nothing else): the floor
of a Python proxy, with none of the router's work (auth, routing, limits, figures, logs).
CPU time per request of the Python processes comes from /proc. The router is
measured with rate limits off, with the three limits on (in memory), and with them on through Redis (one
process, and one worker per core).

    .venv/bin/python bench/router_throughput.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import NGM, ROOT, clean_env, free_port, print_table, start, stop, wait_ready  # noqa: E402

NGINX_CONF = """worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-API-Key k; }} }}
}}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pids(pid: int) -> list[int]:
    """The process itself, or its workers when it is `ngm serve --workers N`'s supervisor."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] or [pid]


def wrk(url: str, seconds: int, connections: int, headers: dict | None = None, pid: int | None = None) -> dict:
    """pid: also report the CPU time per request of that process or of its workers (robust to other load on
    a shared machine, unlike requests per second)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    pids = worker_pids(pid) if pid else []
    cpu_before = sum(map(cpu_seconds, pids))
    out = subprocess.run(args, capture_output=True, text=True).stdout
    cpu = sum(map(cpu_seconds, pids)) - cpu_before if pid else None
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "p50": pct(50), "p99": pct(99), "errors": int(errors.group(1)) if errors else 0,
            "cpu_us": cpu / requests * 1e6 if cpu is not None and requests else None}


def setup_ngm(base: str, upstream_port: int, data_dir: Path) -> tuple[str, str]:
    from ngm.models.database import open_database
    from ngm.nodes.auth.store import create_key

    async def key():
        db = await open_database(f"sqlite:///{data_dir / 'ngm.db'}")
        k, _ = await create_key(db, "bench", "org_owner", "bench", "bench")
        await db.close()
        return k

    api_key = asyncio.run(key())
    with httpx.Client(base_url=base, headers={"X-API-Key": api_key}) as c:
        gw = c.post("/api/v1/gateways", json={"name": "upstream", "environment": "production",
                                              "api_url": f"http://127.0.0.1:{upstream_port}", "api_key": "k"}).json()
        c.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bench", "agent_version": "1"})
    return api_key, gw["id"]


def set_limits(base: str, api_key: str, gateway_id: str, on: bool) -> None:
    """On: all three scopes limited, high enough that nothing is refused (the cost of checking, not refusing)."""
    limit = 10**9 if on else 0
    httpx.put(f"{base}/api/v1/gateways/{gateway_id}/rate-limits", headers={"X-API-Key": api_key},
              json={"global_rate_limit": limit, "per_agent_rate_limit": limit, "per_user_rate_limit": limit})
    time.sleep(1.5)


def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["rps"])
    cpu = sorted(r["cpu_us"] for r in runs if r["cpu_us"] is not None)
    return ordered[len(ordered) // 2] | {"runs": [r["rps"] for r in runs],
                                         "cpu_us": cpu[len(cpu) // 2] if cpu else None, "cpu_runs": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on runs of the router")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk (Debian package wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="ngm-router-bench-"))
    nginx_conf = workdir / "nginx.conf"
    procs = []
    rows = []
    costs = []
    try:
        upstream_port = free_port()
        farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), "1", "0", "0"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(farm)
        upstream_port = json.loads(farm.stdout.readline())["healthy"][0]
        run = lambda label, url, headers=None: rows.append(  # noqa: E731
            [label, wrk(url, args.seconds, args.connections, headers)])
        run("(a) upstream directly", f"http://127.0.0.1:{upstream_port}/health")

        # nginx runs from here to the end and is measured in every round of the router's runs too: on this
        # shared machine the ratio to nginx is only meaningful between runs close in time
        nginx_url, nginx_runs = None, []
        if shutil.which("nginx"):
            port = free_port()
            nginx_conf.write_text(NGINX_CONF.format(dir=workdir, upstream=upstream_port, port=port))
            subprocess.run(["nginx", "-c", str(nginx_conf)], check=True)
            time.sleep(0.5)
            nginx_url = f"http://127.0.0.1:{port}/health"

        # With several workers (one per core, as nginx runs below) limits and figures are shared through Redis.
        workers = os.cpu_count() or 1
        for label, redis_url, count in (("", None, 1), (" + Redis", args.redis, 1),
                                        (f", {workers} workers + Redis", args.redis, workers)):
            ngm_port, data = free_port(), workdir / f"data{bool(redis_url)}{count}"
            env = clean_env(NGM_DATA_DIR=str(data), NGM_DATABASE_URL=f"sqlite:///{data / 'ngm.db'}",
                            NGM_MONITOR="off", NGM_API_RATE_LIMIT="0", **({"NGM_REDIS_URL": redis_url} if redis_url
                                                                          else {}))
            log = workdir / f"ngm{bool(redis_url)}{count}.log"
            ngm = start([NGM, "serve", "--port", str(ngm_port), "--workers", str(count)], env, log)
            procs.append(ngm)
            base = f"http://127.0.0.1:{ngm_port}"
            wait_ready(base, ngm)
            while count > 1 and b"workers serving on" not in log.read_bytes():  # the first serves before the rest
                time.sleep(0.2)
            api_key, gateway_id = setup_ngm(base, upstream_port, data)
            invoke = f"{base}/api/v1/agents/bench/invoke/health"
            wrk(invoke, 2, args.connections, {"X-API-Key": api_key})  # warm up
            # Off and on alternate, --rounds times each, and the medians are compared: on this shared
            # machine a drift over a minute would otherwise show up as the cost of the limits.
            runs = {False: [], True: []}
            beside = []  # nginx's run of each round
            for _ in range(args.rounds):
                for on in (False, True):
                    set_limits(base, api_key, gateway_id, on)
                    runs[on].append(wrk(invoke, args.seconds, args.connections, {"X-API-Key": api_key}, ngm.pid))
                if nginx_url:
                    beside.append(wrk(nginx_url, args.seconds, args.connections))
                    nginx_runs.append(beside[-1])
            for on, what in ((False, "rate limits off"), (True, "3 rate limits on")):
                row = median_run(runs[on])
                if beside:  # each run against nginx's of the same round
                    ratios = sorted(r["rps"] / n["rps"] for r, n in zip(runs[on], beside))
                    row["vs_nginx"] = ratios[len(ratios) // 2]
                rows.append([f"(b) ngm router{label}, {what}", row])
            off, on = rows[-2][1], rows[-1][1]
            costs.append((label or " in memory", 1 - on["rps"] / off["rps"], on["cpu_us"] / off["cpu_us"] - 1))
            stop(ngm)

        for label, kind in (("(c) FastAPI + httpx forwarder", "fastapi-httpx"),
                            ("(e) uvicorn + aiohttp client forwarder", "asgi-aiohttp"),
                            ("(f) uvicorn, bare ASGI app, no forwarding", "asgi-bare"),
                            ("(g) bare proxy on asyncio protocols + httptools", "protocol-proxy")):
            port = free_port()
            proc = start([sys.executable, str(ROOT / "bench" / "forwarders.py"), kind, str(port), str(upstream_port)],
                         clean_env(), workdir / f"{kind}.log")
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}", proc, path="/health")
            rows.append([label, wrk(f"http://127.0.0.1:{port}/health", args.seconds, args.connections, None,
                                    proc.pid)])

        if nginx_url:
            nginx_runs.append(wrk(nginx_url, args.seconds, args.connections))
            rows.append([f"(d) nginx proxy (2 workers), median of its {len(nginx_runs)} runs", median_run(nginx_runs)])
    finally:
        for proc in procs:
            stop(proc)
        if nginx_conf.exists():
            subprocess.run(["nginx", "-c", str(nginx_conf), "-s", "stop"])
    nginx = next((r[1]["rps"] for r in rows if r[0].startswith("(d)")), None)  # for rows without a pair of their own
    table = []
    for label, r in rows:
        table.append([label, f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", str(r["errors"]),
                      f"{r.get('vs_nginx') or r['rps'] / nginx:.2f}x" if nginx else "-",
                      f"{r['cpu_us']:.0f}" if r.get("cpu_us") else "-"])
    print_table(f"wrk, {args.connections} connections, {args.seconds} s each, trivial upstream on 127.0.0.1 "
                f"(router: median of {args.rounds} alternating runs; its 'vs nginx': the median of each run's "
                f"ratio to nginx's run in the same round)",
                ["", "requests/s", "p50 ms", "p99 ms", "non-2xx", "vs nginx", "CPU us/req"], table)
    for label, r in rows:
        if "runs" in r:
            print(f"  {label}: req/s {', '.join(f'{x:,.0f}' for x in r['runs'])}"
                  + (f"; CPU us/req {', '.join(f'{x:.0f}' for x in r['cpu_runs'])}" if r["cpu_runs"] else ""))
    for where, cost, cpu in costs:
        print(f"  cost of three rate limits{where}: {cost:.1%} of the router's throughput (medians), "
              f"{cpu:+.1%} CPU per request in the ngm process")


if __name__ == "__main__":
    main()
