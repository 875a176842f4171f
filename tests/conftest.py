"""Shared fixtures: real SQLite files and real PostgreSQL databases (fresh per test session), and an
AppContext per backend. Each test works in an organization of its own, so tests never see each other's
records, and nothing depends on state left by an earlier run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from ngm.config.logging import setup_logging
from tests.support.processes import LOOPBACK_ONLY

os.environ["NGM_OUTBOUND_ONLY"] = LOOPBACK_ONLY  # in-process CLI runs read the environment
PG_ADMIN_URL = os.environ.get("NGM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
setup_logging(os.environ.get("NGM_LOG_LEVEL", "WARNING"))


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _drop_pg(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def pg_database_factory():
    """Creates fresh PostgreSQL databases on demand; drops them all at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"ngm_test_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return _pg_url(name)  # ngm creates it on first open

    yield make
    for name in created:
        _drop_pg(name)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ngm")


@pytest.fixture(scope="session")
def database_url(backend, session_dir, pg_database_factory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{session_dir / f'ngm-{uuid.uuid4().hex[:6]}.db'}"
    return pg_database_factory()


@pytest.fixture(scope="session")
def settings(database_url, session_dir):
    from ngm.config import Settings

    data = session_dir / f"data-{uuid.uuid4().hex[:6]}"
    return Settings.from_env({"NGM_DATA_DIR": str(data), "NGM_DATABASE_URL": database_url,
                              "NGM_OUTBOUND_ONLY": LOOPBACK_ONLY})


@pytest.fixture(scope="session")
async def ctx(settings):
    from ngm.context import AppContext

    context = await AppContext.open(settings)
    yield context
    await context.close()


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"
