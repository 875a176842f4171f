"""Open the DataFlow database named by the settings.

PostgreSQL: the database is created when missing and pinned to UTC, because DataFlow's automatic
created_at/updated_at are `timestamp without time zone` filled with the session's local time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ngm.models import MODEL_NAMES, register_models

log = logging.getLogger("ngm.db")


def ensure_postgres_database(url: str) -> None:
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "ngm"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = psycopg2.connect(url)
    except psycopg2.OperationalError as exc:
        if f'"{name}" does not exist' not in str(exc):
            raise
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created PostgreSQL database %s", name)
        except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
            pass  # another instance starting at the same moment created it
        finally:
            admin.close()
        conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW timezone")
            if cur.fetchone()[0] not in ("UTC", "Etc/UTC"):
                cur.execute(sql.SQL("ALTER DATABASE {} SET timezone TO 'UTC'").format(sql.Identifier(name)))
    except psycopg2.Error as exc:  # not the owner: timestamps stay in server time
        log.warning("could not pin database %s to UTC: %s", name, exc.pgerror or exc)
    finally:
        conn.close()


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///"):])
    return None


async def open_database(url: str):
    """Return a connected DataFlow with every model's table in place."""
    if url.startswith(("postgresql://", "postgres://")):
        ensure_postgres_database(url)
        async with _schema_lock(url):  # instances starting together must not race each other's CREATE TABLEs
            return await _open_dataflow(url)
    if (path := sqlite_path(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return await _open_dataflow(url)


@contextlib.asynccontextmanager
async def _schema_lock(url: str):
    """A PostgreSQL advisory lock (session-scoped, on the database itself) held while tables are created."""
    import psycopg2

    conn = await asyncio.to_thread(psycopg2.connect, url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            await asyncio.to_thread(cur.execute, "SELECT pg_advisory_lock(7412093)")
        yield
    finally:
        conn.close()  # releases the lock


async def _open_dataflow(url: str):
    from dataflow import DataFlow

    db = DataFlow(
        url,
        cache_enabled=False,  # the default cache serves stale reads across instances
        enable_model_persistence=False,
        test_mode=False,  # else DataFlow changes its pooling when it notices pytest: test what runs in production
    )
    register_models(db)
    for model in MODEL_NAMES:  # the first operation on a model creates its table and indexes
        await db.express.count(model, filter={})
    return db
