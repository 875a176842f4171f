"""Rows as callers see them, rendered as JSON by the database (SQLite's json_object, PostgreSQL's
json_build_object): the read paths of the management API's busiest lists. A page goes into the REST response as
that text (JsonText); every other channel's page is parsed by orjson.

Why: a page of 50 gateways spent 1.1 ms of the event loop's time per request converting rows in Python
(tuples to dicts, JSON and time columns decoded, times formatted again, floats rounded, secrets dropped),
which held 64 concurrent clients to 390 lists/s. The database does the same in C, off the event loop (SQLite
runs in its connection's thread without the GIL; PostgreSQL in its own process), and the page is not parsed
at all on its way to a REST caller (bench/registry_latency.py, docs/performance.md).

What a view yields equals `decode` + the resource's own Python view of the same row, as JSON text:
tests/integration/test_json_rows.py compares the two over random rows on both databases. Times are ISO 8601
in UTC with milliseconds and Z (ngm.models.rows.iso); booleans and JSON columns as JSON; floats rounded to 3
places by Python's rule. SQLite's floats are stored rounded (ngm.models.query: its JSON prints 15 significant
digits of a REAL); PostgreSQL's REAL is 4 bytes (6.89 comes back as 6.8899998), so it rounds them here, as
Python's round() does: x * 1000 is exact in a float8, rint() breaks ties to even (numeric's round() and the
REAL-to-numeric cast would not: 12345.678 became 12345.7), and an integral value is written with '.0', as
Python writes a float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from ngm.models import TABLES, Column
from ngm.models.database import Queries
from ngm.models.query import order_clause, where_clause

# ngm writes every time as 'YYYY-MM-DD HH:MM:SS.ffffff' (26 characters): its milliseconds are cut, not rounded,
# as Python's isoformat cuts them; any other stored form goes through strftime
_SQLITE_TIME = ("CASE WHEN length({c}) = 26 THEN substr({c}, 1, 10) || 'T' || substr({c}, 12, 12) || 'Z' "
                "ELSE strftime('%Y-%m-%dT%H:%M:%fZ', {c}) END")
# a rounded float8 as orjson writes Python's: 60 -> 60.0, 1e+16 as it is, NaN and infinities null (as is NULL)
_PG_FLOAT = ("(CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL "
             "ELSE {r}::text || CASE WHEN {r}::text ~ '^-?[0-9]+$' THEN '.0' ELSE '' END END)::json").replace(
    "{r}", "(round({c}::float8 * 1000) / 1000)")
_EXPRESSIONS = {
    "sqlite": {"bool": "json(CASE WHEN {c} IS NULL THEN 'null' WHEN {c} THEN 'true' ELSE 'false' END)",
               # SQLite writes an infinity as Inf, which no JSON parser reads (it keeps no NaN: that is NULL)
               "float": "CASE WHEN abs({c}) = 9e999 THEN NULL ELSE {c} END",
               "json": "json({c})", "time": _SQLITE_TIME},
    "postgresql": {"float": _PG_FLOAT, "time": "to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"},
}
_OBJECT = {"sqlite": "json_object", "postgresql": "json_build_object"}
_ARRAY = {"sqlite": "coalesce(json_group_array({o}), '[]')", "postgresql": "coalesce(json_agg({o}), '[]')"}
_KEY = {"sqlite": "json_array", "postgresql": "json_build_array"}
_MAX_ARGUMENTS = 100  # PostgreSQL's limit on a function's arguments (json_build_object takes two per field)


class JsonText:
    """Rows as the database rendered them, JSON text not parsed: REST's encoder writes it into the response as
    it is (orjson.Fragment); every other reader takes `rows()`. On SQLite a page of 50 gateways then costs the
    event loop no parse: 0.19x -> 0.25x of the bare route's throughput (bench/registry_latency.py)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = orjson.loads(self.text)
        return rows


def plain(value: Any) -> Any:
    """`value` with JsonText parsed, at its top level or one level down (an operation's page)."""
    if isinstance(value, JsonText):
        return value.rows()
    if isinstance(value, dict) and any(isinstance(v, JsonText) for v in value.values()):
        return {k: v.rows() if isinstance(v, JsonText) else v for k, v in value.items()}
    return value


@dataclass(frozen=True)
class JsonView:
    """The public form of a table's rows: every column but `hidden`, then `extra` fields, each an SQL
    expression per dialect ({"sqlite": ..., "postgresql": ...})."""

    model: str
    hidden: frozenset[str] = frozenset()
    extra: dict[str, dict[str, str]] = field(default_factory=dict)
    sql: dict[str, str] = field(init=False)  # the JSON object of a row, per dialect

    def __post_init__(self) -> None:  # made once: the statement of every read
        columns = [c for c in TABLES[self.model].columns.values() if c.name not in self.hidden]
        object.__setattr__(self, "sql", {dialect: _object_sql(self, columns, dialect) for dialect in _OBJECT})


def _object_sql(view: JsonView, columns: list[Column], dialect: str) -> str:
    pairs = [(c.name, _expression(c, dialect)) for c in columns]
    pairs += [(name, by_dialect[dialect]) for name, by_dialect in view.extra.items()]
    if 2 * len(pairs) > _MAX_ARGUMENTS:
        raise ValueError(f"{view.model}: {len(pairs)} fields are more than one JSON object can be built from")
    fields = ", ".join(f"'{name}', {expr}" for name, expr in pairs)
    return f"{_OBJECT[dialect]}({fields})"


def _expression(column: Column, dialect: str) -> str:
    template = _EXPRESSIONS[dialect].get(column.kind)
    return template.format(c=column.name) if template else column.name


async def select_json(q: Queries, view: JsonView, where: dict[str, Any], *, order: Iterable[str] = (),
                      limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """The rows `where` selects, in the view's form (in `order`: an aggregate over an ordered subquery keeps
    its order on both databases, which the differential test checks)."""
    sql, params = _page_sql(q, view, where, order, limit, offset)
    return JsonText(await q.value(sql, params)).rows()


async def page_json(q: Queries, view: JsonView, where: dict[str, Any], *, order: Iterable[str], limit: int,
                    offset: int, after: list[Any] | None = None) -> tuple[JsonText, int, list[Any] | None]:
    """(one page of the rows `where` selects, in the view's form; how many it selects in all; the order columns'
    values of the page's last row when rows follow it, else None), in one statement, the page as JSON text.
    after: start after the row with these order-column values (keyset paging; ascending order only)."""
    order = list(order)
    sql, params = _page_sql(q, view, where, order, limit, offset, after)
    table = TABLES[view.model]
    count_where = where_clause(table, where, params)  # the same names for the same values as the page's
    keyset = (order, after) if after is not None else None
    rows = (f"SELECT {', '.join(order)} FROM {table.name}{where_clause(table, where, params, after=keyset)}"
            f"{order_clause(table, order)} LIMIT :limit OFFSET :offset")
    # the last row of the page, if any row of the list follows it (the next page is not empty)
    last = (f"SELECT {_KEY[q.dialect]}({', '.join(f'p.{c}' for c in order)}) FROM "
            f"(SELECT * FROM ({rows}) AS r{order_clause(table, [f'-{c}' for c in order])} LIMIT 1) AS p "
            f"WHERE EXISTS (SELECT 1 FROM {table.name}{count_where}{' AND' if count_where else ' WHERE'} "
            f"({', '.join(order)}) > ({', '.join(f'p.{c}' for c in order)}))")
    row = await q.row(f"SELECT (SELECT COUNT(*) FROM {table.name}{count_where}) AS total, ({sql}) AS items, "
                      f"({last}) AS next_key", params)
    assert row is not None  # a SELECT without FROM: always one row
    next_key = orjson.loads(row["next_key"]) if row["next_key"] is not None else None
    return JsonText(row["items"]), int(row["total"]), next_key


def _page_sql(q: Queries, view: JsonView, where: dict[str, Any], order: Iterable[str], limit: int | None,
              offset: int, after: list[Any] | None = None) -> tuple[str, dict[str, Any]]:
    """One JSON array of the page's rows. The objects are built over the page alone: built in the query that
    skips `offset` rows, PostgreSQL built them for the skipped rows too (10 ms for 50 rows at offset 950)."""
    table = TABLES[view.model]
    params: dict[str, Any] = {}
    order = list(order)
    keyset = (order, after) if after is not None else None
    rows = (f"SELECT * FROM {table.name}{where_clause(table, where, params, after=keyset)}"
            f"{order_clause(table, order)}")
    if limit is not None:
        rows += " LIMIT :limit OFFSET :offset"
        params.update(limit=limit, offset=offset)
    return f"SELECT {_ARRAY[q.dialect].format(o=view.sql[q.dialect])} FROM ({rows}) AS page", params
