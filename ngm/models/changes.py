"""The routing change feed: a version per organization, raised by the database itself whenever a row the routing
snapshot reads is inserted, deleted, or has one of those columns changed (triggers on gateways, deployments and
policies). Every write path is covered, whatever code or instance makes it, and a probe that changes only a
gateway's counters raises nothing.

Readers poll `changed_since` (one indexed statement, usually returning no row) and re-read only the
organizations whose version moved: an idle installation of any size costs one statement per poll (#25). The
stamp is the database's clock when the row was written (PostgreSQL: clock_timestamp(), before the commit), so
a poll asks for what was stamped since its previous poll less LOOKBACK seconds: a transaction that commits up
to LOOKBACK seconds after it wrote is still seen; a longer one is caught by the periodic full re-read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # database.py puts the triggers in place
    from ngm.models.database import Database, Queries

LOOKBACK = 5.0  # seconds a poll looks back past the previous one (transactions that commit late)

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
TRIGGERS = tuple(f"ngm_routing_{table}_{op}" for table in ROUTING_COLUMNS for op in ("insert", "update", "delete"))

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_PG_NOW = "(clock_timestamp() AT TIME ZONE 'UTC')"
_SQLITE_BUMP = ("INSERT INTO routing_changes (id, version, changed_at) VALUES ({row}.organization_id, 1, "
                f"{_SQLITE_NOW}) ON CONFLICT (id) DO UPDATE SET version = version + 1, "
                "changed_at = excluded.changed_at;")
# the time LOOKBACK seconds ago, in the form the triggers write (SQLite's: text, compared as text)
_EARLIER = {"sqlite": f"SELECT strftime('%Y-%m-%d %H:%M:%f', 'now', '-{LOOKBACK:g} seconds')",
            "postgresql": f"SELECT {_PG_NOW} - interval '{LOOKBACK:g} seconds'"}
_PG_FUNCTION = f"""CREATE OR REPLACE FUNCTION ngm_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE org text;
BEGIN
  IF TG_OP = 'DELETE' THEN org := OLD.organization_id; ELSE org := NEW.organization_id; END IF;
  INSERT INTO routing_changes (id, version, changed_at) VALUES (org, 1, {_PG_NOW})
  ON CONFLICT (id) DO UPDATE SET version = routing_changes.version + 1, changed_at = EXCLUDED.changed_at;
  RETURN NULL;
END $$"""


def _changed(table: str, distinct: str) -> str:
    columns = ROUTING_COLUMNS[table]
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that put the triggers in place, replacing older ones of the same name."""
    out = [] if dialect == "sqlite" else [_PG_FUNCTION]
    for table in ROUTING_COLUMNS:
        for op in ("insert", "update", "delete"):
            name = f"ngm_routing_{table}_{op}"
            when = f" WHEN ({_changed(table, 'IS NOT' if dialect == 'sqlite' else 'IS DISTINCT FROM')})" \
                if op == "update" else ""
            if dialect == "sqlite":
                row = "OLD" if op == "delete" else "NEW"
                out += [f"DROP TRIGGER IF EXISTS {name}",
                        f"CREATE TRIGGER {name} AFTER {op.upper()} ON {table} FOR EACH ROW{when} "
                        f"BEGIN {_SQLITE_BUMP.format(row=row)} END"]
            else:
                out.append(f"CREATE OR REPLACE TRIGGER {name} AFTER {op.upper()} ON {table} FOR EACH ROW{when} "
                           "EXECUTE FUNCTION ngm_routing_changed()")
    return out


async def create_triggers(database: Database) -> None:
    """The triggers in place, in one transaction (SQLite: instances opening together do not drop each other's
    new triggers; PostgreSQL: under the schema's advisory lock)."""
    async with database.transaction() as tx:
        if database.dialect == "postgresql":
            await tx.value("SELECT pg_advisory_xact_lock(7412093)")
        for statement in trigger_ddl(database.dialect):
            await tx.execute(statement)


async def changed_since(q: Queries, since: Any) -> tuple[Any, dict[str, int]]:
    """(the database's time now, less LOOKBACK: the `since` of the next poll; {organization: version} of every
    organization stamped at or after `since`, all of them when `since` is None)."""
    next_since = await q.value(_EARLIER[q.dialect])
    if since is None:
        rows = await q.rows("SELECT id, version FROM routing_changes")
    else:
        rows = await q.rows("SELECT id, version FROM routing_changes WHERE changed_at >= :since", {"since": since})
    return next_since, {r["id"]: int(r["version"]) for r in rows}
