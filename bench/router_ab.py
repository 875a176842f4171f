"""The router's CPU per request, this checkout against another commit, measured side by side.

    .venv/bin/python bench/router_ab.py BASE_COMMIT [--rounds 30] [--seconds 2] [--limits [--redis URL]]
    .venv/bin/python bench/router_ab.py HEAD --limits-cost [--redis URL]   # limits off (base) against on (this)

Both versions serve at once (the other commit from a temporary git worktree, on this checkout's .venv, its
hot path compiled as this checkout's is), and in every round wrk drives both at the same time, 16 connections
each: whatever else the shared machine does during a round, both see it. CPU per request of each process
comes from /proc; the figure to read is the median of the per-round ratios (and the minimum of each side,
the least disturbed run). A change of 2-3% shows over 30 rounds; a run of one version after the other on
this machine varies by 10-20%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, clean_env, free_port, start, stop, wait_ready  # noqa: E402
from bench.router_throughput import set_limits, setup_ngm, wrk  # noqa: E402

# ngm from a given source tree, whatever the venv's editable install points at
SERVE = ("import sys; sys.path.insert(0, {src!r}); sys.argv[0] = 'ngm'; "
         "from ngm.channels.cli import main; main()")


def compile_hot_path(tree: Path) -> None:
    """Build the other commit's compiled modules as this checkout's are built (like for like), all of them from
    its own sources. (This once copied this checkout's build of each module whose .py was the same: a change
    made in a .pxd alone then ran on both sides, and read as no change.)"""
    if not (tree / "setup.py").exists():
        return
    subprocess.run([sys.executable, "-W", "ignore", "setup.py", "-q", "build_ext", "--inplace", "-j", "2"],
                   cwd=tree, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--limits", action="store_true", help="the three rate limits on in both (in memory)")
    parser.add_argument("--redis", help="a Redis URL: the limits (and figures) through it, in both")
    parser.add_argument("--limits-cost", action="store_true",
                        help="the three limits on in this checkout only: their cost, side by side with them off")
    parser.add_argument("--alternate", action="store_true",
                        help="wrk drives one version at a time, alternating: requests/s too (on a machine with "
                             "other load, less robust than both at once)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ngm-router-ab-"))
    base_tree = workdir / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base], check=True,
                   capture_output=True)
    compile_hot_path(base_tree)
    procs = []
    try:
        farm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_farm.py"), "1", "0", "0"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(farm)
        upstream_port = json.loads(farm.stdout.readline())["healthy"][0]
        sides = {}
        for name, src in (("base", base_tree), ("this", ROOT)):
            port, data = free_port(), workdir / f"data-{name}"
            env = clean_env(NGM_DATA_DIR=str(data), NGM_DATABASE_URL=f"sqlite:///{data / 'ngm.db'}",
                            NGM_MONITOR="off", NGM_API_RATE_LIMIT="0",
                            **({"NGM_REDIS_URL": args.redis} if args.redis else {}))
            proc = start([sys.executable, "-c", SERVE.format(src=str(src)), "serve", "--port", str(port)], env,
                         workdir / f"{name}.log")
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc)
            api_key, gateway_id = setup_ngm(url, upstream_port, data)
            set_limits(url, api_key, gateway_id, args.limits or (args.limits_cost and name == "this"))
            invoke = f"{url}/api/v1/agents/bench/invoke/health"
            wrk(invoke, 2, 16, {"X-API-Key": api_key})  # warm up
            sides[name] = (proc, invoke, api_key)
        runs = {"base": [], "this": []}
        rps = {"base": [], "this": []}
        with ThreadPoolExecutor(2) as pool:
            for round_ in range(args.rounds):
                if args.alternate:
                    for name, (proc, invoke, key) in sides.items():
                        result = wrk(invoke, args.seconds, 16, {"X-API-Key": key}, proc.pid)
                        runs[name].append(result["cpu_us"])
                        rps[name].append(result["rps"])
                    continue
                order = list(sides.items())[::1 if round_ % 2 else -1]  # either's wrk first, in turn
                running = {name: pool.submit(wrk, invoke, args.seconds, 16, {"X-API-Key": key}, proc.pid)
                           for name, (proc, invoke, key) in order}
                for name, future in running.items():
                    runs[name].append(future.result()["cpu_us"])
    finally:
        for proc in procs:
            stop(proc)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    ratios = sorted(t / b for b, t in zip(runs["base"], runs["this"]))
    print(f"\nCPU us per request, {args.rounds} rounds of {args.seconds} s, "
          f"{'one after the other' if args.alternate else 'both at once'}"
          f"{', three rate limits on' if args.limits else ''}"
          f"{', three rate limits on in this only' if args.limits_cost else ''}"
          f"{' through Redis' if args.redis else ''}:")
    for name in ("base", "this"):
        print(f"  {name:4}  median {statistics.median(runs[name]):.1f}  min {min(runs[name]):.1f}")
    print(f"  this/base per round: median {statistics.median(ratios):.3f} "
          f"(quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}); "
          f"min this/min base {min(runs['this']) / min(runs['base']):.3f}")
    if args.alternate:
        ratios = sorted(t / b for b, t in zip(rps["base"], rps["this"]))
        print(f"  requests/s: base median {statistics.median(rps['base']):,.0f}, "
              f"this {statistics.median(rps['this']):,.0f}; "
              f"this/base per round: median {statistics.median(ratios):.3f} "
              f"(quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f})")


if __name__ == "__main__":
    main()
