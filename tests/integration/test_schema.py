"""The schema is created by DataFlow only where something declared is missing: a database in place is opened
without importing it, and a dropped table or index is put back on the next open (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest

from ngm.models import MODELS, TABLES
from ngm.models.database import missing_schema, open_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def fresh_url(backend, session_dir, pg_database_factory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{session_dir / f'schema-{uuid.uuid4().hex[:6]}.db'}"
    return pg_database_factory()


async def test_a_new_database_gets_every_declared_table_column_and_index(fresh_url):
    db = await open_database(fresh_url)
    try:
        assert await missing_schema(db) == []
        for table in TABLES.values():  # every declared column answers a query
            await db.rows(f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE 1 = 0")
    finally:
        await db.close()


async def missing_after_reopen(url: str) -> list[str]:
    again = await open_database(url)
    try:
        return await missing_schema(again)
    finally:
        await again.close()


async def test_what_was_dropped_is_reported_and_created_again_on_the_next_open(fresh_url):
    index = MODELS[0].__dataflow__["indexes"][0]["name"]
    db = await open_database(fresh_url)
    try:
        await db.execute("DROP TABLE instances")
        await db.execute(f"DROP INDEX {index}")
        missing = await missing_schema(db)
        assert index in missing and "instances.id" in missing and "instances.last_seen" in missing
        assert "gateways.name" not in missing
    finally:
        await db.close()
    assert await missing_after_reopen(fresh_url) == []


async def test_routing_triggers_of_another_version_are_replaced_on_the_next_open(fresh_url):
    """A dropped trigger is put back, and one an older ngm left (another name, other columns) is dropped."""
    from ngm.models.changes import TRIGGERS, trigger_names

    db = await open_database(fresh_url)
    try:
        table = next(t for name, t in await trigger_names(db) if name == TRIGGERS[1])
        on = f" ON {table}" if db.dialect == "postgresql" else ""
        await db.execute(f"DROP TRIGGER {TRIGGERS[1]}{on}")
        older = "ngm_routing_gateways_update_0ld"  # what a version that watched only `name` left behind
        body = ("INSERT INTO routing_changes (id, organization_id, changed_at) VALUES "
                "(NEW.id || 'x', NEW.organization_id, '2000-01-01');")
        await db.execute(
            f"CREATE TRIGGER {older} AFTER UPDATE OF name ON gateways FOR EACH ROW BEGIN {body} END"
            if db.dialect == "sqlite" else
            f"CREATE TRIGGER {older} AFTER UPDATE OF name ON gateways FOR EACH ROW EXECUTE FUNCTION "
            "ngm_routing_changed()")
        assert await missing_schema(db) == [TRIGGERS[1]]
    finally:
        await db.close()
    assert await missing_after_reopen(fresh_url) == []
    db = await open_database(fresh_url, create=False)
    try:
        names = {name for name, _ in await trigger_names(db)}
        assert older not in names and set(TRIGGERS) <= names
    finally:
        await db.close()


def test_opening_a_database_in_place_does_not_import_dataflow(fresh_url):
    import subprocess
    import sys

    code = ("import asyncio, sys\n"
            "from ngm.models.database import open_database\n"
            "async def main():\n"
            "    db = await open_database(sys.argv[1])\n"
            "    await db.close()\n"
            "asyncio.run(main())\n"
            "print('dataflow' in sys.modules)\n")
    first = subprocess.run([sys.executable, "-c", code, fresh_url], capture_output=True, text=True, timeout=120)
    again = subprocess.run([sys.executable, "-c", code, fresh_url], capture_output=True, text=True, timeout=120)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "False"), first.stderr + again.stderr
