"""A running `ngm serve` per backend (shared by the e2e modules; each test uses organizations of its own)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import REDIS_URL, ServerProcess, ngm_env, run_cli


def make_key(database_url: str, org: str, role: str = "org_owner") -> str:
    """Arrange-step helper: mint a key straight in the database (the CLI's own bootstrap is tested apart)."""
    from ngm.models.database import open_database
    from ngm.nodes.auth.store import create_key

    async def go():
        db = await open_database(database_url)
        try:
            key, _ = await create_key(db, org, role, f"test {role}", "tests")
            return key
        finally:
            await db.close()

    with ThreadPoolExecutor(1) as pool:  # a loop of its own: callers may be async tests
        return pool.submit(asyncio.run, go()).result()


@dataclass
class Deployment:
    env: dict
    server: ServerProcess
    database_url: str
    workdir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def new_org(self, role: str = "org_owner") -> tuple[str, str]:
        org = f"org-{uuid.uuid4().hex[:10]}"
        return org, make_key(self.database_url, org, role)

    def key(self, org: str, role: str) -> str:
        return make_key(self.database_url, org, role)

    def client(self, key: str | None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def cli(self, args: list[str], key: str | None = None, remote: bool = True, input: str | None = None):
        env = dict(self.env)
        if key:
            env["NGM_API_KEY"] = key
        if remote:
            env["NGM_URL"] = self.url
        return run_cli(args, env, input=input)


@pytest.fixture(scope="session")
def deployment(backend, tmp_path_factory, pg_database_factory):
    workdir = tmp_path_factory.mktemp(f"e2e-{backend}")
    url = f"sqlite:///{workdir / 'ngm.db'}" if backend == "sqlite" else pg_database_factory()
    env = ngm_env(workdir / "data", url)
    if backend == "postgresql":  # as in production: PostgreSQL with Redis; SQLite is the embedded default
        env["NGM_REDIS_URL"] = REDIS_URL
    server = ServerProcess(env, workdir / "server.log").wait_ready()
    yield Deployment(env, server, url, workdir)
    server.stop()


OBSERVED = ("health_status", "last_health_check", "last_health_status", "last_response_time_ms",
            "unhealthy_workflows")


def configuration(gateway: dict) -> dict:
    """A gateway without what the running health monitor observes (it may probe between two reads)."""
    return {k: v for k, v in gateway.items() if k not in OBSERVED}
