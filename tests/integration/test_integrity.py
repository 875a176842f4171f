"""A change, the checks it depends on and its audit record commit together, on SQLite and PostgreSQL: races
between operations, concurrent partial updates audited record by record, the last owner key, a gateway key
that must not follow its URL."""

import asyncio
import random

import pytest

from ngm.errors import Conflict, NotFound, ValidationFailed
from ngm.models.query import count, select
from ngm.nodes.auth.keys import Principal
from tests.support.processes import LOOPBACK_ONLY

pytestmark = pytest.mark.anyio


def gateway(name="gw", **extra):
    return {"name": name, "environment": "production", "api_url": "http://127.0.0.1:9", **extra}


async def outcome(coro):
    try:
        return await coro
    except (Conflict, NotFound) as exc:
        return exc


async def test_a_deployment_never_lands_on_a_deleted_gateway(ctx, executor, owner):
    """Each trial races a new deployment against the gateway's delete: one of them must lose."""
    both, trials = 0, 30
    for i in range(trials):
        gw = await executor.run("gateways_create", owner, gateway(f"race-{i}"))
        created, deleted = await asyncio.gather(
            outcome(executor.run("deployments_create", owner, {"gateway_id": gw["id"], "agent_id": "bot",
                                                               "agent_version": f"v{i}"})),
            outcome(executor.run("gateways_delete", owner, {}, gw["id"])))
        if not isinstance(created, Exception) and not isinstance(deleted, Exception):
            both += 1
        if isinstance(deleted, Exception):  # the deployment came first: refused while it is active
            assert isinstance(deleted, Conflict) and deleted.code == "active_deployments"
        else:
            assert isinstance(created, NotFound) and created.field == "gateway_id"
    assert both == 0
    orphans = [d for d in await select(ctx.database, "GatewayDeployment", {"organization_id": owner.organization_id})
               if not await count(ctx.database, "Gateway", {"id": d["gateway_id"]})]
    assert orphans == []


FIELDS = {  # field -> values a request may set it to (each request's values are its own)
    "description": lambda n: f"set by request {n}",
    "region": lambda n: f"region-{n}",
    "global_rate_limit": lambda n: 1000 + n,
    "request_timeout": lambda n: 10.0 + n,
    "health_check_interval": lambda n: 30.0 + n,
}


async def test_concurrent_partial_updates_are_each_audited_with_exactly_what_they_changed(ctx, executor, owner):
    gw = await executor.run("gateways_create", owner, gateway("audited"))
    rng = random.Random(7)
    requests = {n: {f: make(n) for f, make in FIELDS.items() if rng.random() < 0.5} or {"description": f"only {n}"}
                for n in range(50)}
    await asyncio.gather(*(executor.run("gateways_update", owner, body, gw["id"]) for body in requests.values()))

    events = await select(ctx.database, "AuditEvent", {"resource_id": gw["id"], "action": "gateway.update"},
                          order=["id"])  # ids sort in the order the changes committed
    state, audited = {f: gw[f] for f in FIELDS}, []
    for event in events:  # every value names its request: a record's values are one request's, all of them
        changes = event["changes"]
        [n] = [n for n, body in requests.items() if body == {f: c["to"] for f, c in changes.items()}]
        audited.append(n)
        for field, change in changes.items():
            assert change["from"] == state[field], (field, change, state[field])  # the row as it was locked
            state[field] = change["to"]
    assert sorted(audited) == sorted(requests)  # one record per request
    final = await executor.run("gateways_get", owner, None, gw["id"])
    assert {f: final[f] for f in FIELDS} == state


async def test_the_last_owner_key_cannot_be_revoked(ctx, executor, owner):
    org = owner.organization_id
    first = await executor.run("keys_create", owner, {"role": "org_owner", "name": "first"})
    admin = await executor.run("keys_create", owner, {"role": "org_admin", "name": "admin"})
    second = await executor.run("keys_create", owner, {"role": "org_owner", "name": "second"})
    as_first = Principal(org, "org_owner", first["id"], "first")
    # two owners revoking each other at once: one wins, the other is refused, one owner remains
    results = await asyncio.gather(outcome(executor.run("keys_revoke", as_first, None, second["id"])),
                                   outcome(executor.run("keys_revoke", as_first, None, first["id"])))
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and refused[0].code == "last_owner_key" and "locked out" in refused[0].message
    active = [k for k in (await executor.run("keys_list", owner, {}))["items"] if k["role"] == "org_owner"]
    assert len(active) == 1
    with pytest.raises(Conflict) as info:  # the survivor revoking itself
        await executor.run("keys_revoke", as_first, None, active[0]["id"])
    assert info.value.code == "last_owner_key"
    assert (await executor.run("keys_revoke", as_first, None, admin["id"]))["revoked"]  # others still may go
    events = await select(ctx.database, "AuditEvent", {"organization_id": org, "action": "api_key.revoke"})
    assert len(events) == 2  # the refused revocations left no record


async def test_a_gateway_key_does_not_follow_its_url_to_another_origin(ctx, executor, owner):
    gw = await executor.run("gateways_create", owner, gateway("keyed", api_key="gw-secret-1234"))
    for url in ("http://127.0.0.2:9", "https://127.0.0.1:9", "http://127.0.0.1:10", "http://other.example:9"):
        with pytest.raises(ValidationFailed) as info:
            await executor.run("gateways_update", owner, {"api_url": url}, gw["id"], source="json")
        assert info.value.details[0]["field"] == "api_key"
    assert (await executor.run("gateways_get", owner, None, gw["id"]))["api_url"] == "http://127.0.0.1:9"
    ported = await executor.run("gateways_create", owner, gateway("ported", api_url="http://127.0.0.1",
                                                                  api_port=18533, api_key="port-key-1234"))
    for change in ({"api_port": 18534}, {"api_port": None}):  # the port moves the origin as much as the URL does
        with pytest.raises(ValidationFailed) as info:
            await executor.run("gateways_update", owner, change, ported["id"], source="json")
        assert info.value.details[0]["field"] == "api_key"
    respelt = {"api_url": "http://127.0.0.1:18533", "api_port": None}  # the same origin, spelt otherwise
    assert (await executor.run("gateways_update", owner, respelt, ported["id"], source="json"))["api_key_set"]
    # the same origin (another path) keeps the key; a new origin with its key, or with the key cleared, is fine
    same = await executor.run("gateways_update", owner, {"api_url": "http://127.0.0.1:9/base"}, gw["id"])
    assert same["api_key_set"] and same["api_key_last4"] == "1234"
    moved = await executor.run("gateways_update", owner, {"api_url": "http://127.0.0.2:9", "api_key": "new-key-5678"},
                               gw["id"])
    assert moved["api_key_last4"] == "5678"
    cleared = await executor.run("gateways_update", owner, {"api_url": "http://127.0.0.3:9", "api_key": None},
                                 gw["id"], source="json")
    assert not cleared["api_key_set"] and cleared["api_url"] == "http://127.0.0.3:9"


async def test_a_refused_change_leaves_neither_change_nor_record(ctx, executor, owner):
    gw = await executor.run("gateways_create", owner, gateway("kept", min_instances=1, max_instances=2))
    before = await count(ctx.database, "AuditEvent", {"resource_id": gw["id"]})
    for body in ({"min_instances": 5}, {"name": None}, {"api_url": "http://[64:ff9b::a9fe:a9fe]/"}):
        with pytest.raises(ValidationFailed):
            await executor.run("gateways_update", owner, body, gw["id"], source="json")
    assert await executor.run("gateways_get", owner, None, gw["id"]) == gw
    assert await count(ctx.database, "AuditEvent", {"resource_id": gw["id"]}) == before


@pytest.mark.postgres
async def test_a_database_that_refuses_connections_is_unavailable_not_an_error(pg_database_factory, tmp_path):
    """However the server refuses (here: the database closed to new connections and its sessions ended by an
    administrator), operations answer 503 database_unavailable; keys read before keep working, keys revoked
    before stay refused, keys never seen get 503. Neither a flood of made-up keys, nor another organization's
    many real ones, nor another key's change makes this instance forget the keys it knows."""
    import psycopg2

    from ngm.config import Settings
    from ngm.context import AppContext
    from ngm.errors import Unauthorized
    from ngm.models.database import DatabaseUnavailable
    from ngm.nodes.auth.keys import generate_api_key
    from ngm.nodes.auth.store import KeyAuthenticator, create_key, revoke_key
    from ngm.workflows.executor import Executor

    url = pg_database_factory()
    ctx = await AppContext.open(Settings.from_env({"NGM_DATA_DIR": str(tmp_path), "NGM_DATABASE_URL": url,
                                                          "NGM_OUTBOUND_ONLY": LOOPBACK_ONLY}))
    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    try:
        auth = KeyAuthenticator(ctx.database, ttl=0.2, max_entries=50)
        known, _ = await create_key(ctx.database, "org-closed", "org_owner", "known", "test")
        other, other_row = await create_key(ctx.database, "org-closed", "org_owner", "other", "test")
        owner = await auth.authenticate(known)
        await auth.authenticate(other)
        await revoke_key(ctx.database, "org-closed", other_row["id"])
        auth.forget(other_row["id"], revoked=True)  # as keys_changed does after the revocation commits
        for _ in range(120):  # made-up keys, more than the cache holds
            with pytest.raises(Unauthorized):
                await auth.authenticate(generate_api_key())
        for i in range(60):  # another organization's real keys, more than the cache holds
            flood, _ = await create_key(ctx.database, "org-flood", "org_viewer", f"f{i}", "test")
            await auth.authenticate(flood)
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        await asyncio.sleep(0.3)  # every answer above has expired: each must be read again, and cannot
        for op, params in (("gateways_list", {}), ("gateways_create", {"name": "x", "environment": "staging",
                                                                        "api_url": "http://127.0.0.1:9"})):
            with pytest.raises(DatabaseUnavailable):
                await Executor(ctx).run(op, owner, params)
        assert await auth.authenticate(known) == owner
        with pytest.raises(Unauthorized):
            await auth.authenticate(other)
        with pytest.raises(DatabaseUnavailable):
            await auth.authenticate(generate_api_key())
        assert ctx.database.availability.status()["state"] == "down"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
        await ctx.close()


async def test_a_policy_set_many_times_at_once_is_set_not_refused(ctx, executor, owner):
    """Setting is idempotent: concurrent first sets of one agent's policy all succeed, on both databases."""
    for trial in range(3):
        agent = f"agent-{trial}"
        results = await asyncio.gather(*(outcome(executor.run("routing_set", owner, {
            "agent_id": agent, "environment": "production", "strategy": "round_robin"})) for _ in range(10)))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert (await executor.run("routing_get", owner, {"agent_id": agent, "environment": "production"},
                                   source="query"))["strategy"] == "round_robin"


async def test_one_gateway_that_cannot_be_routed_to_never_stops_the_table(ctx, executor, owner):
    """A row no router can use (stored before its URL was refused, say) is left out of the table alone."""
    from ngm.models.query import delete as delete_rows
    from ngm.models.query import insert as insert_row
    from ngm.models.rows import new_id
    from ngm.nodes.routing.snapshot import SnapshotLoader

    good = await executor.run("gateways_create", owner, gateway("good"))
    await executor.run("deployments_create", owner, {"gateway_id": good["id"], "agent_id": "bot", "agent_version": "1"})
    bad_id = new_id()
    await insert_row(ctx.database, "Gateway", {"id": bad_id, "organization_id": "org-old", "name": "old",
                                               "environment": "production", "api_url": "http://127.0.0.1:",
                                               "api_port": 18102})
    try:
        table = await SnapshotLoader(ctx.database, ctx.keyring).load()
    finally:
        await delete_rows(ctx.database, "Gateway", {"id": bad_id})
    assert bad_id not in table.gateways and good["id"] in table.gateways
    assert (owner.organization_id, "bot", "production") in table.targets
