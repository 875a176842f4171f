"""The change feed: a row per change, appended by the database itself whenever a row the routing snapshot or
the health monitor reads is inserted, deleted, or has one of those columns changed (triggers on gateways,
deployments and policies), naming the organization (both, when a row moves between organizations). Every write
path is covered, whatever code or instance makes it, and a probe that changes only a gateway's counters adds
nothing. Appended, never updated: writers of one organization take no lock on a shared row (a version row upserted
by the trigger deadlocked the monitor's health batch against an operator's update on PostgreSQL).

Readers (the routing table, the monitor) poll through a ChangeCursor (one indexed statement, usually returning no
row) and re-read only the organizations with a change they have not seen: an idle installation of any size costs
one statement per poll (#25). The stamp is the database's clock when the row was written (PostgreSQL:
clock_timestamp(), before the commit), and a reader counts the changes stamped since LOOKBACK seconds before its
last full read: a transaction that commits up to LOOKBACK seconds after it wrote is still counted; a longer one is
caught by the periodic full re-read. Changes older than an hour are pruned (a count that falls by pruning only
causes one more re-read).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
# the gateway columns only the health monitor reads (ngm.nodes.health.store selects them with the routed ones)
MONITOR_COLUMNS = ("health_check_url", "health_check_interval", "health_check_timeout", "healthy_threshold",
                   "unhealthy_threshold", "degraded_latency_ms", "health_grace_period")
WATCHED_COLUMNS = {**ROUTING_COLUMNS, "gateways": ROUTING_COLUMNS["gateways"] + MONITOR_COLUMNS}
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
_DIGEST = hashlib.sha256(f"{sorted(WATCHED_COLUMNS.items())}{_SQLITE_ADD}{_PG_FUNCTION}".encode()).hexdigest()[:8]
_PREFIX = "ngm_routing_"
_OPS = ("insert", "update", "delete")
TRIGGERS = tuple(f"{_PREFIX}{table}_{op}_{_DIGEST}" for table in WATCHED_COLUMNS for op in _OPS)


def _changed(table: str, distinct: str) -> str:
    columns = WATCHED_COLUMNS[table]
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that put the triggers in place, replacing older ones of the same name."""
    out = [] if dialect == "sqlite" else [_PG_FUNCTION]
    for table in WATCHED_COLUMNS:
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


async def window_start(q: Queries) -> Any:
    """The database's time LOOKBACK seconds ago, as its stamps read (SQLite: text; PostgreSQL: a timestamp)."""
    return await q.value("SELECT " + _EARLIER[q.dialect].format(s=LOOKBACK))


async def counts_since(q: Queries, since: Any) -> dict[str, int]:
    """{organization: changes stamped at or after `since`}: one statement, one row per organization that changed.
    Rows are only appended (and pruned long after), so a count that moved means a change not seen yet."""
    rows = await q.rows("SELECT organization_id, count(*) AS n FROM routing_changes WHERE changed_at >= :since "
                        "GROUP BY organization_id", {"since": since})
    return {r["organization_id"]: int(r["n"]) for r in rows}


async def prune_changes(q: Queries) -> None:
    """Forget changes older than KEEP seconds (any instance may: deleting twice is harmless)."""
    await q.execute("DELETE FROM routing_changes WHERE changed_at < " + _EARLIER[q.dialect].format(s=KEEP))


@dataclass(frozen=True)
class Poll:
    """What a reader must read now: everything (full), or the organizations with a change it has not seen; and
    where the cursor goes once that is read."""
    full: bool
    organizations: frozenset[str]
    since: Any
    counts: dict[str, int]
    moved_window: bool = False


class ChangeCursor:
    """One reader's place in the feed. poll() says what to read; once it is read, done(poll) moves the cursor
    (a read that fails is asked for again). A full read is asked for first and every resync_every seconds, and
    whenever a reader calls resync() (say, after it may have missed changes).

    A poll counts the changes per organization stamped since a point of the cursor's and re-reads those whose
    count moved: one short answer even after a burst (8,000 health transitions made listing the changes themselves
    30-40 ms of this process's time per poll for the next minute). The point is LOOKBACK seconds before the last
    full read, and moves up to LOOKBACK seconds ago every LOOKBACK seconds (otherwise a burst of 200,000 changes
    was counted by every poll until the next full read: 17.8% of a core). Moving it, the new point's counts are
    read first and the old point's after, so a change that commits in between is read now or counted next time;
    only a change committed more than LOOKBACK seconds after it was stamped is left to the full read."""

    def __init__(self, resync_every: float, clock: Callable[[], float] = time.monotonic):
        self.resync_every, self.clock = resync_every, clock
        self._since: Any = None
        self._counts: dict[str, int] | None = None
        self._resync_at = self._move_at = 0.0

    def resync(self) -> None:
        self._resync_at = 0.0

    async def poll(self, q: Queries) -> Poll:
        """Counted before the read: a change made during it moves a count again and is read next time."""
        if self._counts is None or self.clock() >= self._resync_at:
            since = await window_start(q)
            return Poll(True, frozenset(), since, await counts_since(q, since))
        move = self.clock() >= self._move_at
        if move:
            since = await window_start(q)
            baseline = await counts_since(q, since)
        counts, seen = await counts_since(q, self._since), self._counts
        moved = frozenset(org for org in counts.keys() | seen.keys() if counts.get(org) != seen.get(org))
        if move:
            return Poll(False, moved, since, baseline, moved_window=True)
        return Poll(False, moved, self._since, counts)

    def done(self, poll: Poll) -> None:
        self._since, self._counts = poll.since, poll.counts
        if poll.full or poll.moved_window:
            self._move_at = self.clock() + LOOKBACK
        if poll.full:
            self._resync_at = self.clock() + self.resync_every
