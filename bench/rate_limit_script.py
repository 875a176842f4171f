"""Redis's own time per request in the rate-limit script, this checkout's against another commit's, for
script calls carrying 1 to 16 requests (the router sends the requests of one event-loop turn as one call;
at 16 connections a call carried about 7). Three sliding-window scopes per request that all admit, as on
the router with limits on, asked as the router asks. The figure is Redis's `usec_per_call` of EVALSHA (INFO
commandstats), which excludes the network; both scripts are measured in alternating rounds on the same Redis.

    .venv/bin/python bench/rate_limit_script.py BASE_COMMIT [--redis redis://127.0.0.1:6379/0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, print_table  # noqa: E402
from ngm.dataplane.limits import redis_backend  # noqa: E402
from ngm.dataplane.limits.algorithms import Scope  # noqa: E402

MODULE = "ngm/dataplane/limits/redis_backend.py"


def base_module(commit: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{MODULE}"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="ngm-script-ab-")) / "base_redis_backend.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("base_redis_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def script_time(client, module, namespace: str, per_call: int, calls: int) -> float:
    """Redis's microseconds per request for `calls` script calls of `per_call` requests each."""
    backend = module.RedisBackend(client, namespace)
    scopes = [Scope(name, f"{name[0]}:w60000", 10**9, 60_000) for name in ("gateway", "agent", "user")]
    # as the router asks (brief answers, where the script has them)
    brief = {"brief": True} if "brief" in inspect.signature(backend._request).parameters else {}
    request = backend._request(scopes, "gw", False, **brief)
    keys, args = [], [""]
    for _ in range(per_call):
        keys += request.keys
        args += request.args
    await backend._call(keys, args)  # loads the script
    await client.config_resetstat()
    for _ in range(calls // 50):
        pipe = client.pipeline(transaction=False)
        for _ in range(50):
            pipe.evalsha(backend._script.sha, len(keys), *keys, *args)
        await pipe.execute()
    stats = (await client.info("commandstats"))["cmdstat_evalsha"]
    backend.close()
    return stats["usec_per_call"] / per_call


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="the commit to compare this checkout's script with")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sides = {"base": base_module(args.base), "this": redis_backend}
    client = aioredis.from_url(args.redis)
    namespace = f"ngm-bench-{uuid.uuid4().hex[:8]}"
    rows = []
    try:
        for per_call in (1, 2, 4, 8, 16):
            times = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, module in sides.items():
                    times[name].append(await script_time(client, module, f"{namespace}-{name}", per_call, 1000))
            base, this = statistics.median(times["base"]), statistics.median(times["this"])
            rows.append([str(per_call), f"{base:.1f}", f"{this:.1f}", f"{this / base:.2f}"])
    finally:
        async for key in client.scan_iter(match=f"{namespace}*"):
            await client.delete(key)
        await client.aclose()
    print_table(f"Redis's time per request in the script (us, median of {args.rounds} alternating rounds)",
                ["requests per call", "base", "this", "this/base"], rows)


if __name__ == "__main__":
    asyncio.run(main())
