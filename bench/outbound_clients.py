"""Why outbound calls use aiohttp: 1,000 GETs of stand-in gateways (half fast, a quarter after 200 ms, a
quarter refused) at 256 in flight, with the HTTP clients considered, measured in the same run.

    .venv/bin/python bench/outbound_clients.py
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, print_table  # noqa: E402
from bench.health_sweep import closed_ports  # noqa: E402


async def measure(call, urls: list[str], in_flight: int = 256) -> list[str]:
    gate = asyncio.Semaphore(in_flight)

    async def one(url):
        async with gate:
            try:
                return await asyncio.wait_for(call(url), 5)
            except Exception:
                return None

    cpu, start = time.process_time(), time.perf_counter()
    answers = await asyncio.gather(*(one(u) for u in urls))
    wall = time.perf_counter() - start
    return [f"{wall:.2f} s", f"{time.process_time() - cpu:.2f} s", str(sum(1 for a in answers if a == 200))]


async def main() -> None:
    farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), "500", "250", "200"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(farm.stdout.readline())
        urls = [f"http://127.0.0.1:{p}/health" for p in ports["healthy"] + ports["slow"] + closed_ports(250)]
        shared = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
        tls = ssl.create_default_context()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), trust_env=False)

        async def httpx_shared(url):
            return (await shared.get(url)).status_code

        async def httpx_per_call(url):
            async with httpx.AsyncClient(verify=tls, trust_env=False) as client:
                return (await client.get(url)).status_code

        async def aiohttp_shared(url):
            async with session.get(url, allow_redirects=False) as resp:
                await resp.read()
                return resp.status

        rows = []
        for name, call in [("httpx, one shared client", httpx_shared), ("httpx, a client per call", httpx_per_call),
                           ("aiohttp, one shared session", aiohttp_shared)]:
            await measure(call, urls[:100])  # warm up
            rows.append([name, *await measure(call, urls)])
        await shared.aclose()
        await session.close()
        print_table("1,000 GETs at 256 in flight (750 answer, 250 refused)", ["client", "wall", "CPU", "200s"], rows)
    finally:
        farm.kill()


if __name__ == "__main__":
    asyncio.run(main())
