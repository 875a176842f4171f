"""Plain statements on one table, built from its declaration (`ngm.models.TABLES`), and rows read back in
one shape whatever the backend: booleans as bool, JSON as lists and dicts, times as naive UTC datetimes.

Every write goes through `insert` or `update`, which refuse null for a column the model does not declare
Optional (422 naming the field), so no operation of any resource can store null where a value is required.

`where` maps a column to a value (None: IS NULL) or to (operator, value) with operator one of
= <> < <= > >= in. Table and column names come from the declarations, never from callers.

Lists page by offset or by keyset: `after` holds the order columns' values of the last row a caller has, and the
page starts after it (`(name, id) > (:k0, :k1)`), so rows inserted or deleted meanwhile never shift a row into
two pages or out of all of them, and a deep page costs what the first does. Callers hold it as an opaque cursor.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from ngm.errors import ValidationFailed
from ngm.models import TABLES, Table
from ngm.models.database import Json, Queries
from ngm.models.rows import parse_time, utcnow

if TYPE_CHECKING:
    from typing import Iterator, TypeVar

    _T = TypeVar("_T")

_OPERATORS = frozenset({"=", "<>", "<", "<=", ">", ">="})


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _time(value: Any) -> Any:
    return value if isinstance(value, datetime) else parse_time(value)


_CONVERT = {"bool": bool, "json": _json, "time": _time, "float": float}
# per table, the columns a row read back needs converted (SQLite: 0/1, JSON text, time text; PostgreSQL: REAL),
# made once: a list of 50 gateways spent 1.8 ms looking at every column of every row
_CONVERSIONS: dict[str, tuple[tuple[str, Any], ...]] = {
    t.name: tuple((c.name, _CONVERT[c.kind]) for c in t.columns.values() if c.kind in _CONVERT)
    for t in TABLES.values()}


def decode(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    for name, convert in _CONVERSIONS[table.name]:
        value = row.get(name)
        if value is not None:
            row[name] = convert(value)
    return row


def _encode(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        column = table.columns[name]  # KeyError: a column the model does not declare
        if value is None:
            if not column.nullable:
                raise ValidationFailed.from_fields([{"field": name, "message": "must not be null"}])
        elif column.kind == "json":
            value = Json(value)
        elif column.kind == "time" and not isinstance(value, datetime):
            value = parse_time(value)
        elif column.kind == "float":
            value = stored_float(value)
        out[name] = value
    return out


def stored_float(value: float) -> float:
    """A float as it is stored: as every view shows it, to 3 places (SQLite's JSON prints 15 digits of what is
    stored, which rounded 1.0005000000000002 the other way)."""
    return round(float(value), 3)


def where_clause(table: Table, where: dict[str, Any] | None, params: dict[str, Any], *,
                 after: tuple[Iterable[str], list[Any]] | None = None) -> str:
    """after: (ascending order columns, the last row's values of them): only the rows past it."""
    if not where and after is None:
        return ""
    clauses = []
    for i, (name, cond) in enumerate((where or {}).items()):
        if name not in table.columns:
            raise KeyError(f"{table.name} has no column {name}")
        op, value = cond if isinstance(cond, tuple) else ("=", cond)
        if value is None:
            clauses.append(f"{name} IS NULL" if op == "=" else f"{name} IS NOT NULL")
        elif op == "in":
            values = list(value)
            if not values:
                clauses.append("1 = 0")
                continue
            names = [f"w{i}_{j}" for j in range(len(values))]
            params.update({n: _param(table, name, v) for n, v in zip(names, values)})
            clauses.append(f"{name} IN ({', '.join(':' + n for n in names)})")
        else:
            if op not in _OPERATORS:
                raise ValueError(f"unknown operator {op}")
            params[f"w{i}"] = _param(table, name, value)
            clauses.append(f"{name} {op} :w{i}")
    if after is not None:
        columns, values = list(after[0]), after[1]
        if any(c not in table.columns for c in columns) or len(columns) != len(values):
            raise KeyError(f"{table.name}: a keyset of {columns}")
        params.update({f"k{i}": _param(table, c, v) for i, (c, v) in enumerate(zip(columns, values))})
        clauses.append(f"({', '.join(columns)}) > ({', '.join(f':k{i}' for i in range(len(columns)))})")
    return " WHERE " + " AND ".join(clauses)


def encode_cursor(listing: str, values: list[Any]) -> str:
    """An opaque cursor for the row of `listing` (the list's name) holding these order-column values."""
    return base64.urlsafe_b64encode(json.dumps([listing, *values], separators=(",", ":")).encode()).decode().rstrip(
        "=")


def decode_cursor(cursor: str, listing: str, columns: int) -> list[Any]:
    """The values a cursor of encode_cursor for `listing` holds: `columns` strings; 422 naming `cursor` for
    anything else, a cursor of another list included."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.rstrip("=") + "=" * (-len(cursor.rstrip("=")) % 4)))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not (isinstance(values, list) and len(values) == columns + 1 and values[0] == listing
            and all(isinstance(v, str) and _storable(v) for v in values)):
        raise ValidationFailed.from_fields([{"field": "cursor", "message": f"not a cursor this list of {listing} "
                                                                            "returned (use next_cursor as it came)"}])
    return values[1:]


def _storable(text: str) -> bool:
    """Text a database stores and compares: no NUL, no unpaired surrogate (a forged cursor may hold either)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def page_after(params: dict[str, Any], listing: str, columns: int) -> list[Any] | None:
    """The keyset a list operation's `cursor` names (None without one); a cursor with an offset is refused."""
    if params.get("cursor") is None:
        return None
    if params.get("offset"):
        raise ValidationFailed.from_fields([{"field": "cursor", "message": "page by cursor or by offset, not both"}])
    return decode_cursor(params["cursor"], listing, columns)


def _param(table: Table, name: str, value: Any) -> Any:
    if table.columns[name].kind == "time" and not isinstance(value, datetime):
        return parse_time(value)
    return value


def order_clause(table: Table, order: Iterable[str]) -> str:
    parts = []
    for item in order:
        name = item.lstrip("-")
        if name not in table.columns:
            raise KeyError(f"{table.name} has no column {name}")
        parts.append(f"{name} DESC" if item.startswith("-") else name)
    return " ORDER BY " + ", ".join(parts) if parts else ""


async def select(q: Queries, model: str, where: dict[str, Any] | None = None, *, order: Iterable[str] = (),
                 limit: int | None = None, offset: int = 0, lock: bool = False, after: list[Any] | None = None
                 ) -> list[dict[str, Any]]:
    """after: the order columns' values of the row the result starts after (keyset paging)."""
    table = TABLES[model]
    params: dict[str, Any] = {}
    order = list(order)
    keyset = (order, after) if after is not None else None
    sql = f"SELECT * FROM {table.name}{where_clause(table, where, params, after=keyset)}{order_clause(table, order)}"
    if limit is not None:
        sql += " LIMIT :limit OFFSET :offset"
        params.update(limit=limit, offset=offset)
    if lock:
        sql += q.lock
    return [decode(table, r) for r in await q.rows(sql, params)]


async def select_one(q: Queries, model: str, where: dict[str, Any], *, lock: bool = False) -> dict[str, Any] | None:
    found = await select(q, model, where, limit=1, lock=lock)
    return found[0] if found else None


async def count(q: Queries, model: str, where: dict[str, Any] | None = None) -> int:
    table = TABLES[model]
    params: dict[str, Any] = {}
    return int(await q.value(f"SELECT COUNT(*) AS n FROM {table.name}{where_clause(table, where, params)}", params))


async def insert(q: Queries, model: str, record: dict[str, Any]) -> dict[str, Any]:
    """Insert one row (created_at and updated_at now); returns what was written, decoded."""
    table = TABLES[model]
    now = utcnow()
    record = {"created_at": now, "updated_at": now, **record}
    values = _encode(table, record)
    names = list(values)
    await q.execute(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})",
                    values)
    return record


async def update(q: Queries, model: str, row_id: str, changes: dict[str, Any]) -> int:
    """Change the given columns of one row (and updated_at); returns the rows changed (0 or 1)."""
    table = TABLES[model]
    values = _encode(table, {**changes, "updated_at": utcnow()})
    sets = ", ".join(f"{n} = :{n}" for n in values)
    return await q.execute(f"UPDATE {table.name} SET {sets} WHERE id = :row_id", {**values, "row_id": row_id})


async def delete(q: Queries, model: str, where: dict[str, Any]) -> int:
    table = TABLES[model]
    params: dict[str, Any] = {}
    return await q.execute(f"DELETE FROM {table.name}{where_clause(table, where, params)}", params)


async def insert_many(q: Queries, model: str, records: list[dict[str, Any]]) -> None:
    """Insert rows of the same columns with one statement (executemany)."""
    if not records:
        return
    table = TABLES[model]
    now = utcnow()
    values = [_encode(table, {"created_at": now, "updated_at": now, **r}) for r in records]
    names = list(values[0])
    await q.many(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})",
                 values)


def chunks(values: list[_T], size: int = 500) -> Iterator[list[_T]]:
    """Slices for IN lists (SQLite allows 32,766 parameters a statement; PostgreSQL 65,535)."""
    for i in range(0, len(values), size):
        yield values[i:i + size]
