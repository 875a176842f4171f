"""The database: tables created by DataFlow from the models, then read and written through ngm's own
connections, with transactions on both backends.

Why not DataFlow's own read/write paths: `db.express` is not transactional (a change, the checks it depends
on and its audit record could not commit together), DataFlow's transaction manager does not work on SQLite,
and its workflow nodes rewrite user text. So DataFlow declares and creates the tables (`create_schema`) and
`Database` talks to them: asyncpg on PostgreSQL, aiosqlite on SQLite (a thread per connection: the event
loop never waits on the file). Both are what DataFlow itself installs.

SQL is written once with `:name` parameters (sqlite3's style), rewritten to `$n` for asyncpg. Values go in as
Python values: naive UTC datetimes, booleans, `Json(...)` for JSON columns.

A transaction (`async with database.transaction() as tx`) is the unit of a change: on PostgreSQL the rows it
depends on are locked with `tx.lock` (`SELECT ... FOR UPDATE`); on SQLite a write transaction takes the
database's write lock at BEGIN (BEGIN IMMEDIATE), so changes are serialised and every read in it sees the
state it will commit on. A connection that fails (the server stopped, the file unreadable) raises
`DatabaseUnavailable` (503 `database_unavailable`), logged once per outage rather than once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, cast
from urllib.parse import urlsplit, urlunsplit

from ngm.errors import Conflict, DatabaseUnavailable, NgmError, ValidationFailed
from ngm.models import MODEL_NAMES, MODELS, TABLES, register_models
from ngm.models.changes import TRIGGERS, create_triggers, trigger_names

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("ngm.db")


class Json:
    """A value for a JSON column (JSONB on PostgreSQL, text on SQLite)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


# ---------------------------------------------------------------- schema (DataFlow)

def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///"):])
    return None


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


def prepare_sqlite_file(path: Path) -> None:
    """The embedded database is private: its folder 0700, the file 0600 (SQLite gives its -wal and -shm
    files the file's mode), created so before anything opens it."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for place in (path.parent, path):  # made by someone else: said, not changed (it may be shared on purpose)
        mode = stat.S_IMODE(place.stat().st_mode)
        if mode & 0o077:
            log.warning("%s is readable by group or others (mode %o); chmod %s it", place, mode,
                        "700" if place == path.parent else "600")


async def create_schema(url: str) -> None:
    """Every model's table and indexes, created by DataFlow where missing."""
    if is_postgres(url):
        async with _schema_lock(url):  # instances starting together must not race each other's CREATE TABLEs
            await _create_with_dataflow(url)
        return
    await _create_with_dataflow(url)


async def missing_schema(database: "Database") -> list[str]:
    """The declared tables, columns and indexes the database lacks. Asked before DataFlow is: importing it
    costs about 3 s, which every CLI command and server start paid on a database already in place."""
    if database.dialect == "postgresql":
        columns = await database.rows("SELECT table_name AS t, column_name AS c FROM information_schema.columns"
                                      " WHERE table_schema = current_schema()")
        indexes = await database.rows("SELECT indexname AS i FROM pg_indexes WHERE schemaname = current_schema()")
    else:
        columns = await database.rows("SELECT m.name AS t, p.name AS c FROM sqlite_master m"
                                      " JOIN pragma_table_info(m.name) p WHERE m.type = 'table'")
        indexes = await database.rows("SELECT name AS i FROM sqlite_master WHERE type = 'index'")
    triggers = {name for name, _ in await trigger_names(database)}
    have = {(r["t"], r["c"]) for r in columns} | {r["i"] for r in indexes} | triggers
    wanted: list[tuple[str, str] | str] = [(t.name, c) for t in TABLES.values() for c in t.columns]
    wanted += [index["name"] for model in MODELS for index in getattr(model, "__dataflow__", {}).get("indexes", ())]
    wanted += list(TRIGGERS)
    return [w if isinstance(w, str) else ".".join(w) for w in wanted if w not in have]


@contextlib.asynccontextmanager
async def _schema_lock(url: str) -> AsyncIterator[None]:
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


async def _create_with_dataflow(url: str) -> None:
    from dataflow import DataFlow

    db = DataFlow(
        url,
        cache_enabled=False,
        enable_model_persistence=False,
        test_mode=False,  # else DataFlow changes its pooling when it notices pytest
    )
    try:
        register_models(db)
        for model in MODEL_NAMES:  # the first operation on a model creates its table and indexes
            await db.express.count(model, filter={})
    finally:
        await db.close_async()


async def open_database(url: str, *, create: bool = True) -> "Database":
    """The tables in place (create=True), and a connected Database."""
    if create and is_postgres(url):
        await asyncio.to_thread(ensure_postgres_database, url)
    elif create and (path := sqlite_path(url)) is not None:
        prepare_sqlite_file(path)
    database = PostgresDatabase(url) if is_postgres(url) else SqliteDatabase(url)
    await database.connect()
    if create and (missing := await missing_schema(database)):
        log.debug("creating what the database lacks: %s", ", ".join(missing[:10]))
        if any(m not in TRIGGERS for m in missing):
            await create_schema(url)
        await create_triggers(database)
    return database


# ---------------------------------------------------------------- availability

class Availability:
    """Whether the database answers, as the last attempts found: a switch is logged once (not once per
    request) and counted; /readyz shows it."""

    def __init__(self) -> None:
        self.up = True
        self.down_since: float | None = None
        self.outages = 0
        self.reason: str | None = None

    def failed(self, exc: BaseException) -> None:
        if self.up:
            self.up, self.down_since, self.outages = False, time.monotonic(), self.outages + 1
            self.reason = _describe(exc)
            log.error("database unreachable (%s): management operations answer 503 and the router serves from "
                      "its last snapshot until it is back", self.reason)

    def worked(self) -> None:
        if not self.up:
            log.warning("database reachable again after %.1f s", time.monotonic() - (self.down_since or 0))
            self.up, self.down_since, self.reason = True, None, None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": "ok" if self.up else "down", "outages": self.outages}
        if not self.up:
            out["down_seconds"] = round(time.monotonic() - (self.down_since or 0), 1)
            out["error"] = self.reason
        return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# ---------------------------------------------------------------- the query interface

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


class Queries:
    """What a Database and a Transaction both offer. Subclasses implement _call()."""

    dialect: str
    #  ' FOR UPDATE' where row locks exist (PostgreSQL); SQLite's write transactions hold the database's lock
    lock: str = ""

    async def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self._call("rows", sql, params))

    async def row(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        found: list[dict[str, Any]] = await self._call("rows", sql, params)
        return found[0] if found else None

    async def value(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        found: list[dict[str, Any]] = await self._call("rows", sql, params)
        return next(iter(found[0].values())) if found else None

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Runs a statement; returns the number of rows it changed."""
        return cast(int, await self._call("execute", sql, params))

    async def many(self, sql: str, params: list[dict[str, Any]]) -> None:
        """One statement for many parameter sets (in one transaction)."""
        if params:
            await self._call("many", sql, params)

    # params and the result by kind: "rows" a parameter dict (or None) -> list of row dicts; "execute" the same
    # -> the rows changed; "many" a list of parameter dicts -> None
    async def _call(self, kind: str, sql: str, params: Any) -> Any:
        raise NotImplementedError


class Database(Queries):
    """A pool of connections; each call outside a transaction runs on its own (autocommit)."""

    def __init__(self, url: str):
        self.url = url
        self.availability = Availability()

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager["Transaction"]:
        raise NotImplementedError

    async def ping(self) -> None:
        await self.value("SELECT 1 AS one")


class Transaction(Queries):
    def __init__(self, database: Database, conn: Any):
        self.database, self.conn, self.dialect, self.lock = database, conn, database.dialect, database.lock
        self._after: list[Callable[[], Awaitable[object]]] = []

    def after_commit(self, callback: Callable[[], Awaitable[object]]) -> None:
        """An async callable run once the transaction has committed (never if it rolls back)."""
        self._after.append(callback)

    async def run_after_commit(self) -> None:
        for callback in self._after:
            await callback()


class TransactionConflict(Exception):
    """The database aborted a transaction that met another (a deadlock): running it again is safe."""


def _writes(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")


def _refusal(exc: BaseException) -> NgmError | None:
    """What a driver error means for the caller, when it is the caller's doing rather than ours."""
    text = str(exc)
    if "UNIQUE constraint failed" in text or "duplicate key value violates unique constraint" in text:
        return Conflict("conflicts with an existing record", code="conflict")
    return None


# ---------------------------------------------------------------- PostgreSQL (asyncpg)

_PG_TIMEOUT = 3.0  # connecting; a stopped server must cost a request seconds, not minutes


class PostgresDatabase(Database):
    dialect = "postgresql"
    lock = " FOR UPDATE"

    def __init__(self, url: str, *, max_size: int = 10):
        super().__init__(url)
        self._pool: Any = None  # an asyncpg Pool once connected (asyncpg has no type information)
        self._max = max_size
        self._statements: dict[str, tuple[str, tuple[str, ...]]] = {}

    async def connect(self) -> None:
        import asyncpg

        async def setup(conn: Any) -> None:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self._max, init=setup,
                                               timeout=_PG_TIMEOUT, command_timeout=30,
                                               max_inactive_connection_lifetime=60)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def _statement(self, sql: str) -> tuple[str, tuple[str, ...]]:
        found = self._statements.get(sql)
        if found is None:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in names:
                    names.append(name)
                return f"${names.index(name) + 1}"

            found = self._statements[sql] = (_NAMED.sub(number, sql), tuple(names))
        return found

    def _args(self, names: tuple[str, ...], params: dict[str, Any] | None) -> list[Any]:
        params = params or {}
        return [_pg_value(params[n]) for n in names]

    async def run(self, conn: Any, kind: str, sql: str, params: Any) -> Any:
        text, names = self._statement(sql)
        if kind == "rows":
            return [dict(r) for r in await conn.fetch(text, *self._args(names, params))]
        if kind == "execute":
            status = await conn.execute(text, *self._args(names, params))
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        await conn.executemany(text, [self._args(names, p) for p in params])
        return None

    async def _acquire(self) -> Any:
        """A pooled connection; any failure to get one (refused, unreachable, the database not accepting
        connections, too many clients) is the database being unavailable."""
        try:
            return await self._pool.acquire()
        except Exception as exc:
            raise self._down(exc) from None

    async def _call(self, kind: str, sql: str, params: Any) -> Any:
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                result = await self.run(conn, kind, sql, params)
            except Exception as exc:
                if _pg_unavailable(exc):
                    conn.terminate()  # never handed out again: the pool opens a new one in its place
                    if attempt == 1 and self.availability.up and not _writes(sql):
                        continue  # a pooled connection the server closed (a restart): once more, on a new one
                    raise self._down(exc) from None
                raise _pg_error(exc) from exc
            finally:
                await _quietly(self._pool.release(conn))
            self.availability.worked()
            return result

    def _down(self, exc: BaseException) -> DatabaseUnavailable:
        self.availability.failed(exc)
        return DatabaseUnavailable()

    async def _begin(self) -> Any:  # asyncpg's (connection, transaction)
        """A connection with a transaction started on it; a pooled connection the server has closed (after a
        restart) is replaced once."""
        for attempt in (1, 2):
            conn = await self._acquire()
            pg_tx = conn.transaction()
            try:
                await pg_tx.start()
                return conn, pg_tx
            except Exception as exc:
                if _pg_unavailable(exc):
                    conn.terminate()
                await _quietly(self._pool.release(conn))
                if attempt == 2 or not _pg_unavailable(exc):
                    raise

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        try:
            conn, pg_tx = await self._begin()
        except Exception as exc:
            if _pg_unavailable(exc):
                raise self._down(exc) from None
            raise
        tx = PostgresTransaction(self, conn)
        try:
            try:
                yield tx
            except BaseException:
                await _quietly(pg_tx.rollback())
                raise
            await pg_tx.commit()
            self.availability.worked()
        except Exception as exc:
            if _pg_unavailable(exc):
                conn.terminate()
                raise self._down(exc) from None
            raise
        finally:
            await _quietly(self._pool.release(conn))
        await tx.run_after_commit()


class PostgresTransaction(Transaction):
    database: PostgresDatabase

    async def _call(self, kind: str, sql: str, params: Any) -> Any:
        try:
            return await self.database.run(self.conn, kind, sql, params)
        except Exception as exc:
            if _pg_unavailable(exc):
                raise
            raise _pg_error(exc) from exc


def _pg_value(value: Any) -> Any:
    if isinstance(value, Json):
        return value.value
    return value


# SQLSTATE classes that mean the server, not the statement: connection exception, insufficient resources,
# operator intervention (shutdown, cancelled by an administrator), system error
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")


def _pg_unavailable(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.exceptions.PostgresConnectionError,
                        asyncpg.exceptions.InternalClientError)):  # (the last: a connection left mid-protocol)
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in _UNAVAILABLE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc).lower()
        return "closed" in text or ("connection" in text and "lost" in text)
    return False


def _pg_error(exc: BaseException) -> BaseException:
    import asyncpg

    refusal = _refusal(exc)
    if refusal is not None:
        return refusal
    if isinstance(exc, (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)):
        return TransactionConflict(_describe(exc))
    if isinstance(exc, asyncpg.exceptions.DataError):
        log.warning("the database refused a value the input checks let through: %s", _describe(exc))
        return ValidationFailed("a value is out of the range the database can store", field="body")
    return exc


async def _quietly(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:  # the connection is gone: nothing to roll back or release
        pass


# ---------------------------------------------------------------- SQLite (aiosqlite)

_SQLITE_BUSY_MS = 10_000  # another process's write transaction: wait this long for it


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, readers: int = 3):
        super().__init__(url)
        path = sqlite_path(url)
        self._target = str(path) if path is not None else "file:ngm-memory?mode=memory&cache=shared"
        self._uri = path is None
        self._readers = readers
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()  # one write transaction at a time in this process

    async def _open_one(self) -> aiosqlite.Connection:
        import aiosqlite

        conn = aiosqlite.connect(self._target, uri=self._uri, isolation_level=None, timeout=_SQLITE_BUSY_MS / 1000)
        thread = getattr(conn, "_thread", None)
        if thread is not None:  # a process that ends without closing must not wait for it (commits are durable)
            thread.daemon = True
        conn = await conn
        conn.row_factory = _dict_row  # type: ignore[assignment]  # aiosqlite types it as a class; any callable works
        await conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")  # WAL: committed work survives a process crash
        self._all.append(conn)
        return conn

    async def connect(self) -> None:
        self._idle = asyncio.Queue()
        try:
            for _ in range(self._readers):
                self._idle.put_nowait(await self._open_one())
            self._writer = await self._open_one()
        except sqlite3.Error as exc:
            self.availability.failed(exc)
            raise DatabaseUnavailable(f"cannot open the SQLite database: {exc}") from None

    async def close(self) -> None:
        for conn in self._all:
            await _quietly(conn.close())
        self._all.clear()

    @staticmethod
    async def run(conn: aiosqlite.Connection, kind: str, sql: str, params: Any) -> Any:
        if kind == "rows":  # one trip to the connection's thread (execute, fetch and close took three)
            return await conn.execute_fetchall(sql, _sqlite_params(params))
        if kind == "execute":
            async with conn.execute(sql, _sqlite_params(params)) as cursor:
                return cursor.rowcount
        await conn.executemany(sql, [_sqlite_params(p) for p in params])
        return None

    async def _call(self, kind: str, sql: str, params: Any) -> Any:
        if kind != "rows" or _writes(sql):  # a write outside a transaction: a transaction of its own
            async with self.transaction() as tx:
                return await tx._call(kind, sql, params)
        assert self._idle is not None  # connect() came first
        conn = await self._idle.get()
        try:
            result = await self.run(conn, kind, sql, params)
            self.availability.worked()
            return result
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._idle.put_nowait(conn)

    def _error(self, exc: sqlite3.Error) -> BaseException:
        refusal = _refusal(exc)
        if refusal is not None:
            return refusal
        if isinstance(exc, sqlite3.OperationalError):  # locked past the busy timeout, unreadable, disk full
            self.availability.failed(exc)
            return DatabaseUnavailable(f"the database is busy or unreadable ({exc})")
        return exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._write_lock:
            conn = self._writer
            assert conn is not None  # connect() came first
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except BaseException:  # cancelled while BEGIN ran in the connection's thread: it may have begun, and
                await _quietly(conn.execute("ROLLBACK"))  # the next BEGIN would fail ("within a transaction")
                raise
            tx = SqliteTransaction(self, conn)
            try:
                yield tx
            except BaseException:
                await _quietly(conn.execute("ROLLBACK"))
                raise
            try:
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                await _quietly(conn.execute("ROLLBACK"))
                raise self._error(exc) from exc
            except BaseException:  # cancelled: the COMMIT may not have run; the connection must not stay in it
                await _quietly(conn.execute("ROLLBACK"))
                raise
            self.availability.worked()
        await tx.run_after_commit()


class SqliteTransaction(Transaction):
    database: SqliteDatabase
    conn: aiosqlite.Connection

    async def _call(self, kind: str, sql: str, params: Any) -> Any:
        try:
            return await SqliteDatabase.run(self.conn, kind, sql, params)
        except sqlite3.Error as exc:
            raise self.database._error(exc) from exc


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    """Rows as dicts, made in the connection's thread: tuples zipped with the column names, 5x faster than
    dict(sqlite3.Row)."""
    return dict(zip([d[0] for d in cursor.description], row))


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, Json):
        return json.dumps(value.value)
    if isinstance(value, datetime):  # the text form DataFlow's CURRENT_TIMESTAMP uses, with microseconds
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


def _sqlite_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _sqlite_value(v) for k, v in (params or {}).items()}
