"""The routing change feed: a row per change, appended by the database itself whenever a row the routing
snapshot reads is inserted, deleted, or has one of those columns changed (triggers on gateways, deployments and
policies), naming the organization (both, when a row moves between organizations). Every write path is covered,
whatever code or instance makes it, and a probe that changes only a gateway's counters adds nothing. Appended,
never updated: writers of one organization take no lock on a shared row (a version row upserted by the trigger
deadlocked the monitor's health batch against an operator's update on PostgreSQL).

Readers poll `changed_since` (one indexed statement, usually returning no row) and re-read only the
organizations with a change they have not seen: an idle installation of any size costs one statement per poll
(#25). The stamp is the database's clock when the row was written (PostgreSQL: clock_timestamp(), before the
commit), so a poll asks for everything stamped in the last LOOKBACK seconds and skips the changes it saw: a
transaction that commits up to LOOKBACK seconds after it wrote is still seen; a longer one is caught by the
periodic full re-read. Changes older than an hour are pruned.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # database.py puts the triggers in place
    from ngm.models.database import Database, Queries

LOOKBACK = 60.0  # seconds a poll looks back (transactions that commit late)
KEEP = 3600.0  # seconds a change is kept

# the columns of each table the routing snapshot reads (ngm.nodes.routing.snapshot selects exactly these)
ROUTING_COLUMNS: dict[str, tuple[str, ...]] = {
    "gateways": ("id", "organization_id", "name", "environment", "region", "status", "health_status", "api_url",
                 "api_port", "api_key_encrypted", "request_timeout", "global_rate_limit", "per_agent_rate_limit",
                 "per_user_rate_limit", "rate_limit_window", "rate_limit_algorithm", "rate_limit_burst"),
    "gateway_deployments": ("id", "organization_id", "agent_id", "agent_version", "weight", "status", "gateway_id",
                            "rate_limit", "rate_limit_failure_mode"),
    "routing_policies": ("organization_id", "agent_id", "environment", "strategy", "sticky", "sticky_header",
                         "fallback", "fallback_regions"),
}
# the database's time, `s` seconds ago, in the form the triggers write (SQLite's: text, compared as text)
_EARLIER = {"sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now', '-{s:g} seconds')",
            "postgresql": "((clock_timestamp() AT TIME ZONE 'UTC') - interval '{s:g} seconds')"}
_SQLITE_NOW, _PG_NOW = (_EARLIER[d].format(s=0) for d in ("sqlite", "postgresql"))
_SQLITE_ADD = ("INSERT INTO routing_changes (id, organization_id, changed_at) "
               f"SELECT lower(hex(randomblob(16))), {{row}}.organization_id, {_SQLITE_NOW}{{when}};")
_PG_FUNCTION = f"""CREATE OR REPLACE FUNCTION ngm_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE org text;
BEGIN
  IF TG_OP = 'DELETE' THEN org := OLD.organization_id; ELSE org := NEW.organization_id; END IF;
  INSERT INTO routing_changes (id, organization_id, changed_at) VALUES (gen_random_uuid()::text, org, {_PG_NOW});
  IF TG_OP = 'UPDATE' AND OLD.organization_id IS DISTINCT FROM NEW.organization_id THEN
    INSERT INTO routing_changes (id, organization_id, changed_at)
    VALUES (gen_random_uuid()::text, OLD.organization_id, {_PG_NOW});
  END IF;
  RETURN NULL;
END $$"""
# the triggers' names carry a digest of what they watch and do: a version of ngm that routes on other columns
# finds its triggers missing by name and puts them in place, dropping the older ones (create_triggers)
_DIGEST = hashlib.sha256(f"{sorted(ROUTING_COLUMNS.items())}{_SQLITE_ADD}{_PG_FUNCTION}".encode()).hexdigest()[:8]
_PREFIX = "ngm_routing_"
_OPS = ("insert", "update", "delete")
TRIGGERS = tuple(f"{_PREFIX}{table}_{op}_{_DIGEST}" for table in ROUTING_COLUMNS for op in _OPS)


def _changed(table: str, distinct: str) -> str:
    columns = ROUTING_COLUMNS[table]
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that put the triggers in place, replacing older ones of the same name."""
    out = [] if dialect == "sqlite" else [_PG_FUNCTION]
    for table in ROUTING_COLUMNS:
        for op in _OPS:
            name = f"{_PREFIX}{table}_{op}_{_DIGEST}"
            when = f" WHEN ({_changed(table, 'IS NOT' if dialect == 'sqlite' else 'IS DISTINCT FROM')})" \
                if op == "update" else ""
            if dialect == "sqlite":
                body = _SQLITE_ADD.format(row="OLD" if op == "delete" else "NEW", when="")
                if op == "update":  # moved to another organization: the one it left changed too
                    body += " " + _SQLITE_ADD.format(
                        row="OLD", when=" WHERE OLD.organization_id IS NOT NEW.organization_id")
                out += [f"DROP TRIGGER IF EXISTS {name}",
                        f"CREATE TRIGGER {name} AFTER {op.upper()} ON {table} FOR EACH ROW{when} BEGIN {body} END"]
            else:
                out.append(f"CREATE OR REPLACE TRIGGER {name} AFTER {op.upper()} ON {table} FOR EACH ROW{when} "
                           "EXECUTE FUNCTION ngm_routing_changed()")
    return out


async def create_triggers(database: Database) -> None:
    """The triggers in place and those of other versions dropped, in one transaction (SQLite: instances opening
    together do not drop each other's new triggers; PostgreSQL: under the schema's advisory lock)."""
    async with database.transaction() as tx:
        if database.dialect == "postgresql":
            await tx.value("SELECT pg_advisory_xact_lock(7412093)")
        for name, table in await trigger_names(tx):
            if name.startswith(_PREFIX) and name not in TRIGGERS:
                await tx.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if database.dialect == "postgresql" else ""))
        for statement in trigger_ddl(database.dialect):
            await tx.execute(statement)


async def trigger_names(q: Queries) -> list[tuple[str, str]]:
    """(name, table) of every trigger in the database's schema."""
    rows = await q.rows(
        "SELECT t.tgname AS name, c.relname AS tbl FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
        if q.dialect == "postgresql" else "SELECT name, tbl_name AS tbl FROM sqlite_master WHERE type = 'trigger'")
    return [(r["name"], r["tbl"]) for r in rows]


async def changed_since(q: Queries) -> dict[str, str]:
    """{change id: organization} of every change stamped in the last LOOKBACK seconds."""
    rows = await q.rows("SELECT id, organization_id FROM routing_changes WHERE changed_at >= "
                        + _EARLIER[q.dialect].format(s=LOOKBACK))
    return {r["id"]: r["organization_id"] for r in rows}


async def prune_changes(q: Queries) -> None:
    """Forget changes older than KEEP seconds (any instance may: deleting twice is harmless)."""
    await q.execute("DELETE FROM routing_changes WHERE changed_at < " + _EARLIER[q.dialect].format(s=KEEP))
