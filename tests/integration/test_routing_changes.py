"""The routing change feed (ngm/models/changes.py) and the table kept by it (RoutingService.refresh_table), on
both databases: the triggers add a change of an organization for every write the routing snapshot can see and
for no other; an idle refresh reads nothing; a change re-reads only its organization; and after any sequence of
changes the table equals a full read of the database."""

from __future__ import annotations

import random
import uuid
from datetime import datetime

import anyio
import pytest

from ngm.models import TABLES
from ngm.models.changes import WATCHED_COLUMNS, counts_since, window_start
from ngm.models.database import open_database
from ngm.models.query import delete, insert, select, update
from ngm.models.rows import new_id, utcnow
from ngm.nodes.routing.service import RoutingService
from ngm.nodes.routing.snapshot import SnapshotLoader

pytestmark = pytest.mark.anyio


async def change_counts(ctx) -> dict[str, int]:
    """How many changes each organization has in the feed."""
    rows = await ctx.database.rows(
        "SELECT organization_id, COUNT(*) AS n FROM routing_changes GROUP BY organization_id")
    return {r["organization_id"]: int(r["n"]) for r in rows}


async def add_gateway(ctx, org: str, **extra) -> str:
    gateway_id = new_id()
    await insert(ctx.database, "Gateway", {
        "id": gateway_id, "organization_id": org, "name": f"gw-{uuid.uuid4().hex[:8]}", "environment": "production",
        "api_url": f"http://127.0.0.1:{random.randrange(2000, 60000)}", **extra})
    return gateway_id


async def add_deployment(ctx, org: str, gateway_id: str, agent: str = "bot", **extra) -> str:
    deployment_id = new_id()
    await insert(ctx.database, "GatewayDeployment", {
        "id": deployment_id, "organization_id": org, "gateway_id": gateway_id, "agent_id": agent,
        "agent_version": f"v{uuid.uuid4().hex[:4]}", "weight": 50, "deployed_at": utcnow(), "deployed_by": "test",
        **extra})
    return deployment_id


def different(column, value):
    """A value of the column's kind other than `value`."""
    kind = column.kind
    if kind == "text":
        return (value or "") + "-changed"
    if kind == "int":
        return (value or 0) + 1
    if kind == "float":
        return (value or 0) + 1.5
    if kind == "bool":
        return not value
    if kind == "json":
        return ["changed"] if value != ["changed"] else []
    return datetime(2030, 1, 1) if value is None or value.year != 2030 else datetime(2031, 1, 1)


async def test_each_column_the_router_or_monitor_reads_adds_a_change_when_it_changes_and_no_other_does(ctx, org):
    """Every column of the three tables, one update each: a change is added exactly when the column is one the
    routing snapshot or the health monitor reads (WATCHED_COLUMNS); writing such a column's own value again adds
    none, and neither does a probe's counters or history."""
    gateway_id = await add_gateway(ctx, org)
    rows = {"Gateway": gateway_id, "GatewayDeployment": await add_deployment(ctx, org, gateway_id)}
    rows["RoutingPolicy"] = new_id()
    await insert(ctx.database, "RoutingPolicy", {"id": rows["RoutingPolicy"], "organization_id": org,
                                                  "agent_id": "bot", "environment": "production"})
    checked = 0
    for model, row_id in rows.items():
        table = TABLES[model]
        for column in table.columns.values():
            if column.name in ("id", "organization_id"):
                continue  # the key; the organization: moving a row is tested below
            current = (await select(ctx.database, model, {"id": row_id}))[0][column.name]
            before = (await change_counts(ctx)).get(org, 0)
            await update(ctx.database, model, row_id, {column.name: different(column, current)})
            routed = column.name in WATCHED_COLUMNS[table.name]
            assert (await change_counts(ctx))[org] == before + routed, f"{table.name}.{column.name}"
            if routed:
                value = (await select(ctx.database, model, {"id": row_id}))[0][column.name]
                await update(ctx.database, model, row_id, {column.name: value})
                assert (await change_counts(ctx))[org] == before + 1, f"{table.name}.{column.name} unchanged"
            checked += 1
    assert checked > sum(len(c) for c in WATCHED_COLUMNS.values())  # the unwatched columns were tried too


async def test_inserts_deletes_and_moves_add_changes_for_their_organizations(ctx, org):
    other = f"{org}-other"
    await add_gateway(ctx, other)
    before = await change_counts(ctx)
    gateway_id = await add_gateway(ctx, org)
    count = before.get(org, 0) + 1
    deployment_id = await add_deployment(ctx, org, gateway_id)
    assert (await change_counts(ctx))[org] == count + 1
    await update(ctx.database, "GatewayDeployment", deployment_id, {"weight": 10})
    assert (await change_counts(ctx))[org] == count + 2
    await insert(ctx.database, "RoutingPolicy", {"id": new_id(), "organization_id": org, "agent_id": "bot",
                                                  "environment": "production", "strategy": "round_robin"})
    await delete(ctx.database, "GatewayDeployment", {"id": deployment_id})
    await delete(ctx.database, "Gateway", {"id": gateway_id})
    assert (await change_counts(ctx))[org] == count + 5
    assert (await change_counts(ctx))[other] == before[other]  # the other organization's writes were before
    moved = await add_gateway(ctx, org)
    await update(ctx.database, "Gateway", moved, {"organization_id": other})  # by hand: both have changed
    now = await change_counts(ctx)
    assert (now[org], now[other]) == (count + 7, before[other] + 1)
    counted = await counts_since(ctx.database, await window_start(ctx.database))  # what a poll now counts
    assert counted[org] == count + 7 and counted[other] >= 1


async def test_writers_of_one_organization_wait_only_for_the_rows_they_share(ctx, org, backend):
    """A feed row updated by every write of an organization deadlocked the monitor's batch (g1 then g2) against
    an operator's change of g2; the feed only appends, so the operator's update goes through at once."""
    if backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: nothing interleaves")
    g1, g2 = await add_gateway(ctx, org), await add_gateway(ctx, org)
    monitor = await open_database(ctx.settings.database_url, create=False)
    operator = await open_database(ctx.settings.database_url, create=False)
    try:
        async with monitor.transaction() as batch:
            await update(batch, "Gateway", g1, {"health_status": "unhealthy"})
            with anyio.fail_after(5):  # the old feed made this wait for the batch's feed row
                async with operator.transaction() as change:
                    await update(change, "Gateway", g2, {"region": "eu"})
            await update(batch, "Gateway", g2, {"health_status": "unhealthy"})
    finally:
        await monitor.close()
        await operator.close()
    rows = {r["id"]: r for r in await ctx.database.rows(
        "SELECT id, region, health_status FROM gateways WHERE organization_id = :o", {"o": org})}
    assert (rows[g2]["region"], rows[g2]["health_status"], rows[g1]["health_status"]) == \
        ("eu", "unhealthy", "unhealthy")


@pytest.fixture
async def service(ctx):
    routing = RoutingService(ctx)
    calls: list[object] = []
    load, reload = routing.loader.load, routing.loader.reload

    async def counted_load():
        calls.append("all")
        return await load()

    async def counted_reload(current, organizations):
        calls.append(set(organizations))
        return await reload(current, organizations)

    routing.loader.load, routing.loader.reload = counted_load, counted_reload  # type: ignore[method-assign]
    routing.calls = calls  # type: ignore[attr-defined]
    yield routing
    await routing.pool.close()


def view(table) -> dict:
    """The table's content as plain values, to compare two tables."""
    gateways = {k: (g.organization_id, g.name, g.environment, g.region, g.status, g.health_status, g.host, g.port,
                    g.api_key, g.timeout) for k, g in table.gateways.items()}
    targets = {k: [(t.deployment_id, t.agent_version, t.weight, t.status, t.gateway.id, t.rate_limit)
                   for t in ts] for k, ts in table.targets.items()}
    policies = {k: (p.strategy, p.sticky, p.fallback) for k, p in table.policies.items()}
    return {"gateways": gateways, "targets": targets, "policies": policies}


async def test_an_idle_refresh_reads_nothing_and_a_change_rereads_only_its_organization(ctx, org, service):
    orgs = [f"{org}-{i}" for i in range(3)]
    gateways = {o: await add_gateway(ctx, o) for o in orgs}
    for o in orgs:
        await add_deployment(ctx, o, gateways[o])
    await service.refresh_table()
    assert service.calls == ["all"]
    published = service.table.gateways
    for _ in range(3):
        await service.refresh_table()
    assert service.calls == ["all"] and service.table.gateways is published  # nothing read, nothing published
    untouched = service.table.gateways[gateways[orgs[1]]]
    await update(ctx.database, "Gateway", gateways[orgs[0]], {"region": "ap-south"})
    await service.refresh_table()
    assert service.calls == ["all", {orgs[0]}]
    assert service.table.gateways[gateways[orgs[0]]].region == "ap-south"
    assert service.table.gateways[gateways[orgs[1]]] is untouched  # the other organizations were not read
    await delete(ctx.database, "GatewayDeployment", {"organization_id": orgs[2]})
    await delete(ctx.database, "Gateway", {"organization_id": orgs[2]})
    await service.refresh_table()
    assert service.calls[-1] == {orgs[2]}
    assert gateways[orgs[2]] not in service.table.gateways
    assert not [k for k in service.table.targets if k[0] == orgs[2]]


async def test_a_rotated_or_deleted_gateway_key_is_used_at_once_and_then_forgotten(ctx, org, service):
    first, second = ctx.keyring.encrypt("gateway-key-1"), ctx.keyring.encrypt("gateway-key-2")
    gateway_id = await add_gateway(ctx, org, api_key_encrypted=first)
    await service.refresh_table()
    assert service.table.gateways[gateway_id].api_key == "gateway-key-1"
    await update(ctx.database, "Gateway", gateway_id, {"api_key_encrypted": second})
    await service.refresh_table()
    assert service.table.gateways[gateway_id].api_key == "gateway-key-2"
    assert first not in service.loader._keys and second in service.loader._keys  # decrypted once, held once
    await delete(ctx.database, "Gateway", {"id": gateway_id})
    await service.refresh_table()
    assert gateway_id not in service.table.gateways and second not in service.loader._keys


async def test_a_write_by_another_connection_in_a_transaction_that_commits_late_is_seen(ctx, org, service):
    gateway_id = await add_gateway(ctx, org)
    await service.refresh_table()
    other = await open_database(ctx.settings.database_url, create=False)
    try:
        async with other.transaction() as tx:
            await update(tx, "Gateway", gateway_id, {"environment": "staging"})
            await service.refresh_table()  # stamped, not committed: not seen yet
            assert service.table.gateways[gateway_id].environment == "production"
        await service.refresh_table()
        assert service.table.gateways[gateway_id].environment == "staging"
    finally:
        await other.close()


async def test_after_any_sequence_of_changes_the_table_equals_a_full_read(ctx, org, service):
    rng = random.Random(25)
    orgs = [f"{org}-{i}" for i in range(4)]
    gateways: dict[str, list[str]] = {o: [] for o in orgs}
    deployments: list[tuple[str, str]] = []  # (gateway id, deployment id)
    await service.refresh_table()
    for round_ in range(12):
        for _ in range(rng.randrange(1, 6)):
            o = rng.choice(orgs)
            action = rng.choice(["gateway", "deployment", "update", "policy", "delete", "undeploy", "health"])
            if action == "gateway" or not gateways[o]:
                gateways[o].append(await add_gateway(ctx, o, region=rng.choice([None, "eu", "us"])))
            elif action == "deployment":
                gateway_id = rng.choice(gateways[o])
                deployments.append((gateway_id, await add_deployment(ctx, o, gateway_id, agent=rng.choice(["a", "b"]))))
            elif action == "update":
                await update(ctx.database, "Gateway", rng.choice(gateways[o]),
                             {"environment": rng.choice(["production", "staging"]), "status": "active"})
            elif action == "health":
                await update(ctx.database, "Gateway", rng.choice(gateways[o]),
                             {"health_status": rng.choice(["healthy", "unhealthy", "degraded"])})
            elif action == "policy":
                await delete(ctx.database, "RoutingPolicy", {"organization_id": o})
                await insert(ctx.database, "RoutingPolicy", {
                    "id": new_id(), "organization_id": o, "agent_id": rng.choice(["a", "b"]),
                    "environment": "production", "strategy": rng.choice(["round_robin", "weighted"])})
            elif action == "undeploy" and deployments:
                _, deployment_id = deployments.pop(rng.randrange(len(deployments)))
                await delete(ctx.database, "GatewayDeployment", {"id": deployment_id})
            elif action == "delete":
                gateway_id = gateways[o].pop(rng.randrange(len(gateways[o])))
                await delete(ctx.database, "GatewayDeployment", {"gateway_id": gateway_id})
                deployments = [d for d in deployments if d[0] != gateway_id]
                await delete(ctx.database, "Gateway", {"id": gateway_id})
        await service.refresh_table()
        full = await SnapshotLoader(ctx.database, ctx.keyring).load()
        assert view(service.table) == view(full), f"round {round_}"
    assert service.calls.count("all") == 1  # every later round was incremental


async def test_the_cursor_moves_its_window_and_still_sees_every_change(ctx, org):
    """A reader's counting window moves up every LOOKBACK seconds (a burst is not counted for minutes); changes
    made before, at and after the move are each reported, and an idle poll reports none."""
    from ngm.models.changes import LOOKBACK, ChangeCursor

    now = [0.0]
    cursor = ChangeCursor(resync_every=10 * LOOKBACK, clock=lambda: now[0])

    async def poll_done() -> tuple[bool, frozenset[str]]:
        poll = await cursor.poll(ctx.database)
        cursor.done(poll)
        return poll.moved_window, frozenset(o for o in poll.organizations if o.startswith(org))

    first = await cursor.poll(ctx.database)
    assert first.full
    cursor.done(first)
    await add_gateway(ctx, f"{org}-a")
    assert await poll_done() == (False, {f"{org}-a"})
    assert await poll_done() == (False, frozenset())
    now[0] += LOOKBACK + 1  # the window moves at this poll; a change just before it is still reported
    await add_gateway(ctx, f"{org}-b")
    assert await poll_done() == (True, {f"{org}-b"})
    await add_gateway(ctx, f"{org}-c")
    assert await poll_done() == (False, {f"{org}-c"})
    assert await poll_done() == (False, frozenset())
