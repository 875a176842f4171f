"""Gateways rendered as JSON by the database (ngm/models/json_rows.py) equal the Python view of the same rows
(decode, canonical, public_view), in the same order, on SQLite and PostgreSQL: over random rows whose every
column is set to awkward values (quotes, control characters, astral text, nested JSON, times at millisecond
edges, floats of many places, empty and missing keys)."""

from __future__ import annotations

import json
import random
import string
from datetime import datetime, timedelta

import orjson
import pytest

from ngm.models import TABLES
from ngm.models.json_rows import page_json, plain, select_json
from ngm.models.query import count, insert, select
from ngm.models.rows import new_id
from ngm.nodes.gateways import store

pytestmark = pytest.mark.anyio
TEXTS = ["", "plain", "quote ' and \" and \\ backslash", "üñíçødé", "astral 😀𝄞", "tab\tnew\nline\r\x01\x1f",
         "</script>", "{\"not\": \"json\"}", " spaced ", "a" * 300]
JSON_VALUES = [[], {}, ["api_key"], {"nested": {"list": [1, 2.5, None, True, "x"]}, "ü": "😀"}, [{"a": []}],
               "just text", 42, None]


def _time(rng: random.Random) -> datetime | None:
    if rng.random() < 0.2:
        return None
    base = datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(0, 400 * 86400))
    return base.replace(microsecond=rng.choice([0, 999, 1000, 123456, 123999, 999999, rng.randrange(10 ** 6)]))


def _float(rng: random.Random) -> float:
    return rng.choice([0.0, 30.0, 60, 6.89, 0.1 + 0.2, 1e-7, 12345.678, 0.0625, 2.0005, 1.0625, -0.0005,
                       1.0005000000000002,
                       rng.uniform(0, 10 ** 6), round(rng.uniform(0, 1000), rng.randrange(0, 4))])


def _value(rng: random.Random, kind: str, nullable: bool):
    if nullable and rng.random() < 0.25:
        return None
    if kind == "text":
        return rng.choice(TEXTS) + "".join(rng.choices(string.printable, k=rng.randrange(0, 8)))
    if kind == "int":
        return rng.choice([0, 1, -1, 2 ** 31 - 1, rng.randrange(-10 ** 6, 10 ** 6)])
    if kind == "float":
        return _float(rng)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "json":
        return rng.choice(JSON_VALUES) if nullable else rng.choice([[], ["api_key", "jwt"], [{"k": "ü"}]])
    return _time(rng)


def random_gateway(rng: random.Random, organization_id: str, i: int) -> dict:
    row = {c.name: _value(rng, c.kind, c.nullable) for c in TABLES["Gateway"].columns.values()}
    row.update(id=new_id(), organization_id=organization_id, name=f"gw-{rng.randrange(10 ** 6):06d}-{i}",
               environment=rng.choice(["production", "staging"]),
               api_key_encrypted=rng.choice([None, "", "gAAAA-token"]), api_key_last4=rng.choice([None, "wxyz"]))
    return row


def typed(value):
    """JSON text, keys sorted: 60 and 60.0 differ here, as they do to a client."""
    return json.dumps(value, sort_keys=True)


def python_view(row: dict) -> dict:
    return store.public_view(store.canonical(row))


async def test_the_database_renders_every_gateway_as_the_python_view_does(ctx, org):
    rng = random.Random(20261203)
    rows = [random_gateway(rng, org, i) for i in range(120)]
    for row in rows:
        await insert(ctx.database, "Gateway", row)
    where = {"organization_id": org}
    expected = [python_view(r) for r in await select(ctx.database, "Gateway", where, order=["name", "id"])]
    assert len(expected) == 120
    assert typed(await select_json(ctx.database, store.PUBLIC, where, order=["name", "id"])) == typed(expected)
    for gateway in expected[:20]:
        assert typed(await store.get_public(ctx.database, org, gateway["id"])) == typed(gateway)


async def test_floats_at_float4_ties_round_as_python_rounds(ctx, org):
    """Between 2**18 and 2**20 a float4 holds x.0625 exactly, a tie at 3 places that Python's round() breaks to
    even (262144.062) and a database's decimal rounding would break upwards; integral values stay floats."""
    values = [2 ** 18 + k / 16 for k in (1, 3, 5, 11)] + [2 ** 19 + k / 16 for k in (1, 7)] + [0.0, 60.0, 600000.0]
    values += [1e16, float("inf"), float("-inf")]  # not through the API (it bounds them), never a broken page
    rng = random.Random(3)
    for i, value in enumerate(values):
        row = random_gateway(rng, org, i)
        row.update(degraded_latency_ms=value, health_grace_period=-value / 2 ** 20, last_response_time_ms=value)
        await insert(ctx.database, "Gateway", row)
    where = {"organization_id": org}
    expected = [python_view(r) for r in await select(ctx.database, "Gateway", where, order=["name", "id"])]
    assert {g["degraded_latency_ms"] for g in expected} >= {262144.062, 262144.188, 0.0, 60.0}
    items, total, _ = await store.list_public_page(ctx.database, org, {}, 50, 0)
    assert total == len(values)
    assert typed(plain(items)) == typed(orjson.loads(orjson.dumps(expected)))  # as REST writes it: inf is null
    assert typed(await select_json(ctx.database, store.PUBLIC, where, order=["name", "id"])) == typed(
        orjson.loads(orjson.dumps(expected)))


async def test_pages_totals_and_next_keys_match_the_python_view_for_every_filter(ctx, org):
    rng = random.Random(7)
    for i in range(60):
        row = random_gateway(rng, org, i)
        row["status"] = rng.choice(["active", "inactive"])
        await insert(ctx.database, "Gateway", row)
    for _ in range(25):
        filters = {"environment": rng.choice([None, "production", "staging"]),
                   "status": rng.choice([None, "active", "inactive", "nowhere"])}
        limit, offset = rng.choice([1, 7, 50, 100]), rng.choice([0, 3, 30, 59, 60, 500])
        where = {"organization_id": org, **{k: v for k, v in filters.items() if v is not None}}
        rows = await select(ctx.database, "Gateway", where, order=["name", "id"], limit=limit, offset=offset)
        items, total, next_key = await store.list_public_page(ctx.database, org, filters, limit, offset)
        assert total == await count(ctx.database, "Gateway", where)
        assert typed(plain(items)) == typed([python_view(r) for r in rows])
        assert next_key == ([rows[-1]["name"], rows[-1]["id"]] if offset + len(rows) < total else None)


async def test_an_empty_organization_and_an_unknown_gateway(ctx, org):
    items, total, next_key = await page_json(ctx.database, store.PUBLIC, {"organization_id": org}, order=["name"],
                                             limit=50, offset=0)
    assert (plain(items), total, next_key) == ([], 0, None)
    from ngm.errors import NotFound

    with pytest.raises(NotFound) as found:
        await store.get_public(ctx.database, org, new_id())
    assert found.value.field == "gateway_id"
