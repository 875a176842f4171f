"""Faults under load, on `ngm serve` processes of each test's own: a PostgreSQL server stopped and brought
back while agents are routed, `kill -9` in the middle of a stream of creates, Redis gone while a drain waits,
and the embedded defaults' file permissions."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import make_key
from tests.support import postgres_server
from tests.support.processes import ServerProcess, ngm_env
from tests.support.redis_server import PrivateRedis
from tests.support.standin import StandIn
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def setup_routing(client: httpx.Client, standin: StandIn, agent: str) -> dict:
    gw = client.post("/api/v1/gateways", json={"name": "gw", "environment": "production", "api_url": standin.url,
                                               "api_key": "gw-key-1234"}).json()
    dep = client.post("/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": agent, "agent_version": "v1"})
    assert dep.status_code == 201, dep.text
    return dep.json()


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_server.available(), reason="needs Debian's postgresql binaries")
def test_agents_are_routed_through_a_database_outage(tmp_path):
    pg = postgres_server.PrivatePostgres()
    standin = StandIn()
    server = None
    try:
        env = ngm_env(tmp_path / "data", pg.url, NGM_AUTH_CACHE_SECONDS="1")
        server = ServerProcess(env, tmp_path / "server.log").wait_ready()
        org = f"org-{uuid.uuid4().hex[:8]}"
        known, revoked, unknown = make_key(pg.url, org), make_key(pg.url, org), make_key(pg.url, org, "org_viewer")
        agent = "bot"
        client = httpx.Client(base_url=server.url, headers={"X-API-Key": known}, timeout=10)
        setup_routing(client, standin, agent)
        assert client.delete(f"/api/v1/keys/{revoked_id(client, revoked)}").status_code == 200
        invoke = f"/api/v1/agents/{agent}/invoke/workflows/chat/execute"
        assert client.get(invoke).status_code == 200
        assert client.get(invoke, headers={"X-API-Key": revoked}).status_code == 401  # refused before the outage

        statuses: list[int] = []
        stop = threading.Event()

        def route():
            with httpx.Client(base_url=server.url, headers={"X-API-Key": known}, timeout=10) as c:
                while not stop.is_set():
                    statuses.append(c.get(invoke).status_code)

        routers = [threading.Thread(target=route) for _ in range(4)]
        for t in routers:
            t.start()
        time.sleep(1.0)
        pg.stop()
        outage_started = time.monotonic()
        outage = []
        while time.monotonic() - outage_started < 6.0:  # six auth-cache lifetimes
            r = client.get("/api/v1/gateways")
            outage.append((r.status_code, r.json()["error"]["code"], r.headers.get("retry-after")))
            time.sleep(0.3)
        create = client.post("/api/v1/gateways", json={"name": "during", "environment": "staging",
                                                        "api_url": "http://127.0.0.1:9"})
        assert (create.status_code, create.json()["error"]["code"]) == (503, "database_unavailable")
        assert client.get(invoke, headers={"X-API-Key": revoked}).status_code == 401  # still refused
        stranger = client.get(invoke, headers={"X-API-Key": unknown})
        assert (stranger.status_code, stranger.json()["error"]["code"]) == (503, "database_unavailable")
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["database"]["state"] == "down"
        pg.start()
        try:
            wait_for(lambda: client.get("/api/v1/gateways").status_code == 200, 15, "management back after the outage")
        finally:
            stop.set()
            for t in routers:
                t.join()
        assert set(outage) == {(503, "database_unavailable", "5")}, set(outage)
        assert len(statuses) > 100 and set(statuses) == {200}, sorted(set(statuses))
        log = server.log()
        assert log.count("database unreachable") == 1 and log.count("database reachable again") == 1
        assert "Traceback" not in log
    finally:
        if server is not None:
            server.stop()
        standin.stop()
        pg.destroy()


def revoked_id(client: httpx.Client, key: str) -> str:
    prefix = key[:10]
    return next(k["id"] for k in client.get("/api/v1/keys").json()["items"] if k["key_prefix"] == prefix)


@pytest.mark.parametrize("backend_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_kill_9_loses_no_acknowledged_change_and_no_audit_record(tmp_path, backend_kind, pg_database_factory):
    url = f"sqlite:///{tmp_path / 'ngm.db'}" if backend_kind == "sqlite" else pg_database_factory()
    env = ngm_env(tmp_path / "data", url, NGM_MONITOR="off")
    org = f"org-{uuid.uuid4().hex[:8]}"
    key = make_key(url, org)
    acknowledged: list[str] = []
    for round_ in range(2):
        server = ServerProcess(env, tmp_path / f"server-{round_}.log").wait_ready()
        stop = threading.Event()

        def create(worker: int, base: str = server.url, stop: threading.Event = stop, round_: int = round_):
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        r = c.post("/api/v1/gateways", json={"name": f"r{round_}-w{worker}-{n}",
                                                             "environment": "staging", "api_url": "http://127.0.0.1:9"})
                    except httpx.HTTPError:
                        return  # the server died under this request: not acknowledged
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])

        workers = [threading.Thread(target=create, args=(w,)) for w in range(4)]
        for t in workers:
            t.start()
        wanted = 40 * (round_ + 1)
        wait_for(lambda: len(acknowledged) >= wanted, 30, "40 acknowledged creates")  # noqa: B023 (called here)
        server.proc.kill()  # SIGKILL: no shutdown of any kind
        server.proc.wait()
        stop.set()
        for t in workers:
            t.join()
    server = ServerProcess(env, tmp_path / "server-after.log").wait_ready()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as c:
            stored = {g["id"] for g in c.get("/api/v1/gateways", params={"limit": 500}).json()["items"]}
            audited = []
            offset = 0
            while True:
                page = c.get("/api/v1/audit", params={"action": "gateway.create", "limit": 500,
                                                      "offset": offset}).json()
                audited += [e["resource_id"] for e in page["items"]]
                offset += 500
                if offset >= page["total"]:
                    break
        assert len(acknowledged) >= 80
        assert set(acknowledged) <= stored  # every acknowledged create survived
        assert sorted(audited) == sorted(stored)  # each with exactly one record, and no record without its gateway
    finally:
        server.stop()


def test_a_drain_waits_for_redis_rather_than_decide_on_one_instance_s_counts(tmp_path):
    redis = PrivateRedis()
    standin = StandIn()
    url = f"sqlite:///{tmp_path / 'ngm.db'}"
    server = ServerProcess(ngm_env(tmp_path / "data", url, NGM_REDIS_URL=redis.url),
                           tmp_path / "server.log").wait_ready()
    try:
        key = make_key(url, "org-drain")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as c:
            dep = setup_routing(c, standin, "bot")
            redis.kill()
            def both_degraded():  # each notices on its own next round trip to Redis
                checks = httpx.get(server.url + "/readyz").json()["checks"]
                return checks["in_flight"]["state"] == checks["rate_limits"]["state"] == "degraded"

            wait_for(both_degraded, 10, "the in-flight and rate-limit fallbacks in /readyz")
            ready = httpx.get(server.url + "/readyz").json()
            assert ready["status"] == "degraded" and ready["checks"]["redis"]["state"] == "down"
            assert ready["checks"]["rate_limits"]["state"] == "degraded"
            traffic = c.get("/api/v1/agents/bot/traffic").json()
            assert traffic["complete"] is False  # the figures say they are this instance's alone
            assert c.post(f"/api/v1/deployments/{dep['id']}/drain", json={"timeout_seconds": 120}).status_code == 202
            time.sleep(4)  # well past the drain's settle time: with Redis it would be done by now
            assert c.get(f"/api/v1/deployments/{dep['id']}").json()["status"] == "draining"
            redis.start()
            wait_for(lambda: c.get(f"/api/v1/deployments/{dep['id']}").json()["status"] == "inactive", 15,
                     "the drain to finish once Redis is back")
            wait_for(lambda: httpx.get(server.url + "/readyz").json()["status"] == "ready", 10, "ready again")
            assert c.get("/api/v1/agents/bot/traffic").json()["complete"] is True
        from ngm.models.database import open_database
        from ngm.models.query import count

        async def instances() -> int:
            db = await open_database(url, create=False)
            try:
                return await count(db, "Instance")
            finally:
                await db.close()

        assert asyncio.run(instances()) == 1  # here, for the others' drains to wait for
        server.stop()
        assert asyncio.run(instances()) == 0  # left cleanly: nobody waits for it
        log = server.log()
        assert log.count("in-flight counts: Redis unreachable") == 1  # once per switch, not once per read
        assert log.count("in-flight counts: recovered") == 1
        assert log.count("traffic figures: Redis unreachable") == 1 and log.count("event bus: Redis unreachable") == 1
    finally:
        server.stop()
        standin.stop()
        redis.kill()


def test_the_embedded_database_and_its_folder_are_private(tmp_path):
    data = tmp_path / "fresh" / "ngm"
    env = ngm_env(data, "")
    env.pop("NGM_DATABASE_URL")
    server = ServerProcess(env, tmp_path / "server.log").wait_ready()
    try:
        make_key(f"sqlite:///{data / 'ngm.db'}", "org-perm")  # some writes: the WAL files exist
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert modes["ngm.db"] == 0o600 and modes["encryption.key"] == 0o600
        assert all(mode == 0o600 for name, mode in modes.items() if name.startswith("ngm.db")), modes
    finally:
        server.stop()
