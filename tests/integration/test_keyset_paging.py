"""Keyset paging of the gateway and deployment lists on SQLite and PostgreSQL: a walk by cursor returns every row
that exists throughout it exactly once while rows are inserted and deleted during the walk, ends with a null
cursor, keeps the filters, and a bad cursor (or one with an offset) is a 422 naming `cursor`."""

import random

import pytest

from ngm.errors import ValidationFailed
from ngm.models.query import encode_cursor

pytestmark = pytest.mark.anyio


async def make_gateway(executor, owner, name: str, environment: str = "production") -> dict:
    return await executor.run("gateways_create", owner, {"name": name, "environment": environment,
                                                         "api_url": "http://127.0.0.1:9"})


async def walk(executor, owner, operation: str, params: dict, during=None) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        page = await executor.run(operation, owner, {**params, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        cursor, pages = page["next_cursor"], pages + 1
        if cursor is None:
            return items
        assert page["items"] and pages < 100, "a cursor for an empty page, or a walk that does not end"
        if during is not None:
            await during(pages)


async def test_a_walk_returns_every_lasting_gateway_once_while_others_come_and_go(executor, owner):
    rng = random.Random(7)
    lasting = {(await make_gateway(executor, owner, f"gw-{i:03d}"))["id"] for i in range(0, 60, 2)}
    doomed = [(await make_gateway(executor, owner, f"gw-{i:03d}"))["id"] for i in range(1, 60, 2)]
    added: set[str] = set()

    async def churn(page: int) -> None:  # between pages: a deletion and an insertion on either side of the walk
        await executor.run("gateways_delete", owner, None, doomed.pop(rng.randrange(len(doomed))))
        added.add((await make_gateway(executor, owner, f"gw-{rng.randrange(60):03d}-new-{page}"))["id"])

    seen = [g["id"] for g in await walk(executor, owner, "gateways_list", {"limit": 7}, churn)]
    assert len(seen) == len(set(seen))  # no row twice
    assert lasting <= set(seen)  # every row that existed throughout, once
    assert set(seen) <= lasting | set(doomed) | added | set(await deleted_ids(executor, owner, seen))
    names = [g["name"] for g in await walk(executor, owner, "gateways_list", {"limit": 500})]
    assert names == sorted(names)  # and in the list's order


async def deleted_ids(executor, owner, seen: list[str]) -> list[str]:
    """The ids seen that are gone now (deleted after the walk passed them)."""
    now = {g["id"] for g in (await executor.run("gateways_list", owner, {"limit": 500}))["items"]}
    return [i for i in seen if i not in now]


async def test_filters_hold_across_pages_and_the_last_page_has_no_cursor(executor, owner):
    for i in range(9):
        await make_gateway(executor, owner, f"f-{i}", "staging" if i % 3 else "production")
    staging = await walk(executor, owner, "gateways_list", {"limit": 2, "environment": "staging"})
    assert [g["name"] for g in staging] == [f"f-{i}" for i in range(9) if i % 3]
    exact = await executor.run("gateways_list", owner, {"limit": 3, "environment": "production"})
    assert len(exact["items"]) == 3 and exact["next_cursor"] is None  # nothing follows: no cursor to an empty page
    first = await executor.run("gateways_list", owner, {"limit": 4})
    by_offset = await executor.run("gateways_list", owner, {"limit": 4, "offset": 4})
    by_cursor = await executor.run("gateways_list", owner, {"limit": 4, "cursor": first["next_cursor"]})
    assert by_cursor["items"] == by_offset["items"] and by_cursor["total"] == by_offset["total"] == 9


async def test_deployments_page_by_cursor_too(executor, owner):
    gateway = await make_gateway(executor, owner, "d-gw")
    made = {(await executor.run("deployments_create", owner, {"gateway_id": gateway["id"], "agent_id": f"agent-{i}",
                                                               "agent_version": "v1"}))["id"] for i in range(11)}
    seen = [d["id"] for d in await walk(executor, owner, "deployments_list", {"limit": 3})]
    assert sorted(seen) == sorted(made) and len(seen) == len(made)


@pytest.mark.parametrize("cursor", ["not-a-cursor", encode_cursor("gateways", ["a"]),
                                    encode_cursor("gateways", [1, "2"]), encode_cursor("gateways", ["a", "b", "c"]),
                                    "x" * 3000, "a b", "%00", "===", encode_cursor("gateways", ["\ud800", "x"]),
                                    encode_cursor("gateways", ["a\x00", "b"])])
async def test_a_cursor_the_list_did_not_give_is_refused_naming_it(executor, owner, cursor):
    for operation in ("gateways_list", "deployments_list"):
        with pytest.raises(ValidationFailed) as refused:
            await executor.run(operation, owner, {"cursor": cursor})
        assert refused.value.status == 422 and refused.value.field == "cursor", refused.value


async def test_a_cursor_of_one_list_is_refused_by_the_other(executor, owner):
    gateway = await make_gateway(executor, owner, "x-1")
    await make_gateway(executor, owner, "x-2")
    for i in range(2):
        await executor.run("deployments_create", owner, {"gateway_id": gateway["id"], "agent_id": f"x-{i}",
                                                         "agent_version": "v1"})
    for mine, other in (("gateways_list", "deployments_list"), ("deployments_list", "gateways_list")):
        cursor = (await executor.run(mine, owner, {"limit": 1}))["next_cursor"]
        assert cursor is not None
        with pytest.raises(ValidationFailed) as refused:
            await executor.run(other, owner, {"cursor": cursor})
        assert refused.value.field == "cursor"
        padded = cursor + "=" * (-len(cursor) % 4)  # as a base64 tool would write it
        assert (await executor.run(mine, owner, {"limit": 1, "cursor": padded}))["items"]


async def test_a_cursor_with_an_offset_is_refused(executor, owner):
    await make_gateway(executor, owner, "o-1")
    await make_gateway(executor, owner, "o-2")
    cursor = (await executor.run("gateways_list", owner, {"limit": 1}))["next_cursor"]
    with pytest.raises(ValidationFailed) as refused:
        await executor.run("gateways_list", owner, {"cursor": cursor, "offset": 1})
    assert refused.value.field == "cursor" and "not both" in str(refused.value)
