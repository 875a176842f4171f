"""`ngm serve --workers N`: worker processes sharing one port (SO_REUSEPORT) and, through Redis, the rate
limits; a worker that dies is replaced; SIGTERM stops them all; they do not outlive a killed supervisor;
a worker that cannot start stops the supervisor with its reason; more than one worker needs Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import make_key
from tests.support.processes import NGM, REDIS_URL, ServerProcess, ngm_env
from tests.support.standin import StandIn
from tests.support.waiting import room_in_window, wait_for

pytestmark = [pytest.mark.e2e]


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def answering_instances(url: str, tries: int = 40) -> set[str]:
    """/readyz over a new connection each time: the kernel spreads new connections among the workers."""
    return {httpx.get(url + "/readyz", timeout=5).json()["instance"] for _ in range(tries)}


def start_workers(tmp_path: Path, count: int = 2, **extra) -> tuple[ServerProcess, str]:
    database_url = f"sqlite:///{tmp_path / 'data' / 'ngm.db'}"
    env = ngm_env(tmp_path / "data", database_url, NGM_REDIS_URL=REDIS_URL, NGM_MONITOR="off", **extra)
    server = ServerProcess(env, tmp_path / "serve.log", args=("--workers", str(count))).wait_ready()
    wait_for(lambda: f"{count} workers serving on" in server.log(), 60, "every worker to serve")
    return server, database_url


def test_more_than_one_worker_needs_redis(tmp_path):
    env = ngm_env(tmp_path / "data", f"sqlite:///{tmp_path / 'ngm.db'}")
    result = subprocess.run([NGM, "serve", "--port", "1", "--workers", "2"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "--workers 2 needs NGM_REDIS_URL" in result.stderr
    assert not (tmp_path / "ngm.db").exists()  # refused before anything was set up


def test_workers_share_the_port_and_the_rate_limits_and_stop_together(tmp_path):
    server, database_url = start_workers(tmp_path)
    standin = StandIn("healthy")
    try:
        workers = children(server.proc.pid)
        assert len(workers) == 2
        assert {int(i.rsplit(":", 1)[1]) for i in answering_instances(server.url)} == workers

        key = make_key(database_url, "workers")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as c:
            gw = c.post("/api/v1/gateways", json={"name": "gw", "environment": "production", "api_url": standin.url,
                                                  "global_rate_limit": 25, "rate_limit_window": 60})
            assert gw.status_code == 201, gw.text
            dep = c.post("/api/v1/deployments", json={"gateway_id": gw.json()["id"], "agent_id": "bot",
                                                      "agent_version": "v1"})
            assert dep.status_code == 201, dep.text
        time.sleep(1.2)  # both workers have the deployment and its limit by now (they promise < 1 s)

        def invoke(_):  # a new connection each time, so both workers take requests
            return httpx.get(f"{server.url}/api/v1/agents/bot/invoke/health", headers={"X-API-Key": key},
                             timeout=10).status_code

        room_in_window(60, room=15)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(invoke, range(60)))
        assert codes.count(200) == 25 and codes.count(429) == 35  # one limit across both workers

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert not any(alive(pid) for pid in workers)
        assert "stopped 2 workers" in server.log()
    finally:
        server.stop()
        standin.stop()


def test_a_worker_that_dies_is_replaced(tmp_path):
    server, _ = start_workers(tmp_path)
    try:
        first = children(server.proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        def replaced():
            now = children(server.proc.pid)
            return now if len(now) == 2 and victim not in now else None

        now = wait_for(replaced, 15, "a replacement worker")
        [new] = now - first
        wait_for(lambda: f":{new}" in " ".join(answering_instances(server.url, 20)), 60, "the replacement to serve")
        assert "exited with -9: starting another" in server.log()
        assert server.stop(30) == 0
    finally:
        server.stop()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path):
    server, _ = start_workers(tmp_path)
    workers = children(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), 30, "the orphaned workers to stop")
    server.stop()


def test_a_worker_that_cannot_listen_stops_the_supervisor(tmp_path):
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: the workers cannot share its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = ngm_env(tmp_path / "data", f"sqlite:///{tmp_path / 'ngm.db'}", NGM_REDIS_URL=REDIS_URL,
                      NGM_MONITOR="off")
        result = subprocess.run([NGM, "serve", "--port", str(port), "--workers", "2"], env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "worker 0 exited with 1 before serving" in result.stderr


@pytest.mark.anyio
async def test_mcp_sessions_work_whichever_worker_a_request_reaches(tmp_path):
    """Each MCP client below opens new connections, which the kernel spreads among the workers: a session
    begun on one worker must not be unknown to the other."""
    from tests.support.mcp_client import http_tools

    server, database_url = start_workers(tmp_path)
    try:
        key = make_key(database_url, "workers-mcp")
        for i in range(6):
            async with http_tools(server.url, key) as tools:
                assert "gateways_list" in {t.name for t in await tools.list()}
                error, gw = await tools.call("gateways_create", {"name": f"mcp-{i}", "environment": "staging",
                                                                 "api_url": "http://127.0.0.1:9"})
                assert not error, gw
                error, page = await tools.call("gateways_list", {"environment": "staging"})
                assert not error and len(page["items"]) == i + 1, page
    finally:
        server.stop()


def starting_workers(tmp_path: Path) -> tuple[ServerProcess, int]:
    """`ngm serve --workers 2` and the pid of its first worker, while that worker is still setting up."""
    env = ngm_env(tmp_path / "data", f"sqlite:///{tmp_path / 'ngm.db'}", NGM_REDIS_URL=REDIS_URL, NGM_MONITOR="off")
    server = ServerProcess(env, tmp_path / "serve.log", args=("--workers", "2"))
    [first] = wait_for(lambda: children(server.proc.pid), 30, "the first worker to start")
    return server, first


def test_a_stop_during_startup_is_a_clean_stop(tmp_path):
    server, first = starting_workers(tmp_path)
    try:
        server.proc.send_signal(signal.SIGTERM)  # while it is still setting up, before it serves
        assert server.proc.wait(30) == 0, server.log()
        assert not alive(first)
        assert "2 workers serving" not in server.log()
    finally:
        server.stop()


def test_a_worker_killed_before_it_serves_stops_the_supervisor_with_a_failure(tmp_path):
    server, first = starting_workers(tmp_path)
    try:
        os.kill(first, signal.SIGKILL)
        assert server.proc.wait(30) == 1, server.log()  # a plain failure, not the signal's negative number
        assert "worker 0 exited with -9 before serving" in server.log()
    finally:
        server.stop()
