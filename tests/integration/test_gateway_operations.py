"""Every gateway operation through the executor (the path all channels share), on SQLite and PostgreSQL."""

import pytest

from ngm.errors import Conflict, Forbidden, NotFound, ValidationFailed
from ngm.models.query import count, insert, select, select_one, update
from ngm.models.rows import new_id, utcnow
from ngm.nodes.auth.keys import Principal
from tests.integration.conftest import as_role
from tests.support.standin import closed_port

pytestmark = pytest.mark.anyio

TRICKY = [
    "O'Brien \"quoted\" gateway",
    "Robert'); DROP TABLE gateways;--",
    "select * from gateways where 1=1 or 1=1",
    "ünïcödé — 网关 — шлюз 🚀",
    "trailing dashes --",
    "/* comment */ x' OR '1'='1",
]


# One probe decides: for tests about what a check records, not about hysteresis (tests/integration/test_health).
IMMEDIATE = {"healthy_threshold": 1, "unhealthy_threshold": 1, "health_grace_period": 0}


def gw(name="gw-1", **extra):
    return {"name": name, "environment": "production", "api_url": "https://gw.example.com", **extra}


async def create(executor, principal, **fields):
    return await executor.run("gateways_create", principal, gw(**fields))


async def raw_row(ctx, gateway_id):
    return await select_one(ctx.database, "Gateway", {"id": gateway_id})


async def audit_events(ctx, org):
    return await select(ctx.database, "AuditEvent", {"organization_id": org}, order=["occurred_at", "id"])


async def test_create_stores_the_key_encrypted_and_shows_only_last4(ctx, executor, owner):
    out = await create(executor, owner, api_key="gw-secret-KEY-1234")
    assert out["api_key_set"] is True and out["api_key_last4"] == "1234"
    assert "api_key" not in out and "api_key_encrypted" not in out
    assert "gw-secret-KEY-1234" not in str(out)
    row = await raw_row(ctx, out["id"])
    assert row["api_key_encrypted"].startswith("gAAAA") and "gw-secret" not in row["api_key_encrypted"]
    assert ctx.keyring.decrypt(row["api_key_encrypted"]) == "gw-secret-KEY-1234"
    assert out["organization_id"] == owner.organization_id
    assert out["status"] == "active" and out["health_status"] == "unknown" and out["ssl_enabled"] is True
    assert out["created_at"].endswith("Z")


async def test_create_defaults(executor, owner):
    out = await executor.run("gateways_create", owner, {"name": "d", "environment": "staging",
                                                         "api_url": "http://plain"})
    assert out["ssl_enabled"] is False and out["gateway_type"] == "shared"
    assert (out["min_instances"], out["max_instances"], out["current_instances"]) == (1, 1, 0)
    assert out["auth_methods"] == ["api_key"] and out["api_key_set"] is False and out["api_key_last4"] is None


@pytest.mark.parametrize("text", TRICKY)
async def test_text_round_trips_exactly(executor, owner, text):
    description = text + "\nsecond\tline"
    out = await create(executor, owner, name=text, description=description, region="eu-west-1")
    got = await executor.run("gateways_get", owner, None, out["id"])
    assert got["name"] == text and got["description"] == description
    listed = await executor.run("gateways_list", owner, {})
    assert [g["name"] for g in listed["items"]] == [text]
    updated = await executor.run("gateways_update", owner, {"description": text[::-1]}, out["id"])
    assert updated["description"] == text[::-1]


async def test_names_are_unique_per_organization(executor, owner):
    await create(executor, owner, name="dup")
    with pytest.raises(Conflict) as info:
        await create(executor, owner, name="dup")
    assert info.value.status == 409 and info.value.field == "name"
    other = Principal(owner.organization_id + "-b", "org_owner", "k2")
    assert (await create(executor, other, name="dup"))["name"] == "dup"
    assert (await executor.run("gateways_list", owner, {}))["total"] == 1


async def test_list_filters_paginates_and_counts(ctx, executor, owner):
    for i, env in enumerate(["production", "production", "staging", "development", "production"]):
        await create(executor, owner, name=f"gw-{i}", environment=env,
                     status="inactive" if i == 4 else "active")
    ids = {g["name"]: g["id"] for g in (await executor.run("gateways_list", owner, {}))["items"]}
    await update(ctx.database, "Gateway", ids["gw-1"], {"health_status": "healthy"})

    page = await executor.run("gateways_list", owner, {"environment": "production"})
    assert [g["name"] for g in page["items"]] == ["gw-0", "gw-1", "gw-4"] and page["total"] == 3
    assert (await executor.run("gateways_list", owner, {"status": "inactive"}))["total"] == 1
    healthy = await executor.run("gateways_list", owner, {"health_status": "healthy"})
    assert [g["name"] for g in healthy["items"]] == ["gw-1"]
    both = await executor.run("gateways_list", owner, {"environment": "production", "status": "active"})
    assert both["total"] == 2

    first = await executor.run("gateways_list", owner, {"limit": 2})
    second = await executor.run("gateways_list", owner, {"limit": 2, "offset": 2})
    last = await executor.run("gateways_list", owner, {"limit": 2, "offset": 4})
    assert [len(p["items"]) for p in (first, second, last)] == [2, 2, 1]
    assert all(p["total"] == 5 for p in (first, second, last))
    names = [g["name"] for p in (first, second, last) for g in p["items"]]
    assert names == sorted(names) and len(set(names)) == 5
    assert (second["limit"], second["offset"]) == (2, 2)


async def test_bad_list_filters_are_422(executor, owner):
    with pytest.raises(ValidationFailed) as info:
        await executor.run("gateways_list", owner, {"status": "broken"})
    assert info.value.field == "status"


async def test_partial_update_changes_only_what_was_sent(ctx, executor, owner):
    out = await create(executor, owner, description="keep", region="eu-west-1", api_key="first-key-AAAA")
    upd = await executor.run("gateways_update", owner, {"max_instances": 5, "region": None}, out["id"])
    assert upd["max_instances"] == 5 and upd["region"] is None
    assert upd["description"] == "keep" and upd["api_key_last4"] == "AAAA" and upd["name"] == out["name"]
    rotated = await executor.run("gateways_update", owner, {"api_key": "second-key-BBBB"}, out["id"])
    assert rotated["api_key_last4"] == "BBBB"
    assert ctx.keyring.decrypt((await raw_row(ctx, out["id"]))["api_key_encrypted"]) == "second-key-BBBB"
    cleared = await executor.run("gateways_update", owner, {"api_key": None}, out["id"])
    assert cleared["api_key_set"] is False and (await raw_row(ctx, out["id"]))["api_key_encrypted"] is None


async def test_update_checks_rules_against_the_stored_record_and_changes_nothing(executor, owner):
    out = await create(executor, owner, min_instances=2, max_instances=4)
    with pytest.raises(ValidationFailed) as info:
        await executor.run("gateways_update", owner, {"max_instances": 1, "description": "x"}, out["id"])
    assert info.value.field == "min_instances"
    with pytest.raises(ValidationFailed) as info:
        await executor.run("gateways_update", owner, {"auth_methods": ["jwt"]}, out["id"])
    assert info.value.field == "jwt_issuer"
    assert await executor.run("gateways_get", owner, None, out["id"]) == out


async def test_rename_onto_a_taken_name_is_409_and_changes_nothing(executor, owner):
    a = await create(executor, owner, name="a")
    await create(executor, owner, name="b")
    with pytest.raises(Conflict):
        await executor.run("gateways_update", owner, {"name": "b", "description": "x"}, a["id"])
    assert await executor.run("gateways_get", owner, None, a["id"]) == a


async def deploy(ctx, org, gateway_id, active=True):
    await insert(ctx.database, "GatewayDeployment", {
        "id": new_id(), "organization_id": org, "gateway_id": gateway_id, "agent_id": "support-bot",
        "agent_version": "v2", "weight": 100, "is_active": active, "status": "active" if active else "inactive",
        "deployed_at": utcnow(), "deployed_by": "test"})


async def test_delete_refuses_while_deployments_are_active_unless_forced(ctx, executor, owner):
    org = owner.organization_id
    out = await create(executor, owner)
    await deploy(ctx, org, out["id"])
    await deploy(ctx, org, out["id"], active=False)
    with pytest.raises(Conflict) as info:
        await executor.run("gateways_delete", owner, {}, out["id"])
    assert info.value.code == "active_deployments" and info.value.details["active_deployments"] == 1
    assert (await executor.run("gateways_get", owner, None, out["id"]))["id"] == out["id"]
    gone = await executor.run("gateways_delete", owner, {"force": True}, out["id"])
    assert gone == {"id": out["id"], "deleted_deployments": 2}
    with pytest.raises(NotFound):
        await executor.run("gateways_get", owner, None, out["id"])
    assert await count(ctx.database, "GatewayDeployment", {"gateway_id": out["id"]}) == 0


async def test_delete_with_only_inactive_deployments_succeeds(ctx, executor, owner):
    out = await create(executor, owner)
    await deploy(ctx, owner.organization_id, out["id"], active=False)
    assert (await executor.run("gateways_delete", owner, {}, out["id"]))["deleted_deployments"] == 1


async def test_resolve_picks_the_first_active_gateway_of_the_environment(ctx, executor, owner):
    with pytest.raises(NotFound) as info:
        await executor.run("gateways_resolve", owner, {"environment": "production"})
    assert info.value.code == "no_active_gateway"
    off = await create(executor, owner, name="off", status="inactive")
    first = await create(executor, owner, name="first")
    await create(executor, owner, name="staging-only", environment="staging")
    assert (await executor.run("gateways_resolve", owner, {"environment": "production"}))["id"] == first["id"]
    second = await create(executor, owner, name="second")
    await update(ctx.database, "Gateway", first["id"], {"health_status": "unhealthy"})
    await update(ctx.database, "Gateway", second["id"], {"health_status": "healthy"})
    assert (await executor.run("gateways_resolve", owner, {"environment": "production"}))["id"] == second["id"]
    # an inactive gateway is never the answer, however healthy; among unhealthy ones the oldest is
    await update(ctx.database, "Gateway", off["id"], {"health_status": "healthy"})
    await update(ctx.database, "Gateway", second["id"], {"health_status": "unhealthy"})
    assert (await executor.run("gateways_resolve", owner, {"environment": "production"}))["id"] == first["id"]


async def test_health_check_probes_with_the_gateway_key_and_records_the_outcome(executor, owner, standin):
    server = standin("healthy")
    out = await create(executor, owner, api_url=server.url, api_key="probe-key-XYZ9", **IMMEDIATE)
    result = await executor.run("gateways_check", owner, None, out["id"])
    assert result["status"] == "healthy" and result["outcome"] == "ok" and result["http_status"] == 200
    assert result["response_time_ms"] >= 0 and result["last_check"].endswith("Z")
    assert server.requests[-1]["path"] == "/health"
    assert server.requests[-1]["headers"]["X-API-Key"] == "probe-key-XYZ9"
    got = await executor.run("gateways_get", owner, None, out["id"])
    assert got["health_status"] == "healthy" and got["last_health_status"] == "ok"
    assert got["last_health_check"] == result["last_check"]
    assert got["last_response_time_ms"] == result["response_time_ms"]
    assert "probe-key" not in str(result)


@pytest.mark.parametrize("mode, outcome", [("error", "http_503"), ("drop", "error")])
async def test_health_check_records_failures(executor, owner, standin, mode, outcome):
    server = standin(mode)
    out = await create(executor, owner, api_url=server.url, **IMMEDIATE)
    result = await executor.run("gateways_check", owner, None, out["id"])
    assert result["status"] == "unhealthy" and result["outcome"] == outcome
    assert (await executor.run("gateways_get", owner, None, out["id"]))["last_health_status"] == outcome


async def test_health_check_of_a_closed_port(executor, owner):
    out = await create(executor, owner, api_url=f"http://127.0.0.1:{closed_port()}", **IMMEDIATE)
    result = await executor.run("gateways_check", owner, None, out["id"])
    assert (result["status"], result["outcome"], result["http_status"]) == ("unhealthy", "connection_refused", None)


async def test_health_check_uses_health_check_url(executor, owner, standin):
    server = standin("healthy")
    out = await create(executor, owner, api_url="http://127.0.0.1:9", health_check_url=server.url + "/readyz",
                       **IMMEDIATE)
    assert (await executor.run("gateways_check", owner, None, out["id"]))["status"] == "healthy"
    assert server.requests[-1]["path"] == "/readyz"


async def test_another_organization_sees_404_and_changes_nothing(executor, owner, standin):
    server = standin("healthy")
    out = await create(executor, owner, api_url=server.url)
    intruder = Principal("intruder-" + owner.organization_id, "org_owner", "k-intruder")
    for name, params in [("gateways_get", None), ("gateways_update", {"description": "pwned"}),
                         ("gateways_delete", {"force": True}), ("gateways_check", None)]:
        with pytest.raises(NotFound):
            await executor.run(name, intruder, params, out["id"])
    assert (await executor.run("gateways_list", intruder, {}))["total"] == 0
    with pytest.raises(NotFound):
        await executor.run("gateways_resolve", intruder, {"environment": "production"})
    assert await executor.run("gateways_get", owner, None, out["id"]) == out
    assert server.requests == []


@pytest.mark.parametrize("role", ["org_viewer", "org_member"])
async def test_only_owners_and_admins_change_gateways(executor, owner, role):
    out = await create(executor, owner)
    weak = as_role(owner, role)
    assert (await executor.run("gateways_get", weak, None, out["id"]))["id"] == out["id"]
    assert (await executor.run("gateways_list", weak, {}))["total"] == 1
    for name, params, rid in [("gateways_create", gw("new"), None), ("gateways_update", {"name": "x"}, out["id"]),
                              ("gateways_delete", {}, out["id"])]:
        with pytest.raises(Forbidden):
            await executor.run(name, weak, params, rid)
    assert (await executor.run("gateways_list", owner, {}))["items"] == [out]


async def test_viewer_cannot_run_health_checks_but_member_can(executor, owner, standin):
    out = await create(executor, owner, api_url=standin("healthy").url, **IMMEDIATE)
    with pytest.raises(Forbidden):
        await executor.run("gateways_check", as_role(owner, "org_viewer"), None, out["id"])
    assert (await executor.run("gateways_check", as_role(owner, "org_member"), None, out["id"]))["status"] == "healthy"


async def test_admin_may_change_gateways(executor, owner):
    admin = as_role(owner, "org_admin")
    out = await create(executor, admin)
    assert (await executor.run("gateways_update", admin, {"region": "us-east-1"}, out["id"]))["region"] == "us-east-1"
    assert (await executor.run("gateways_delete", admin, {}, out["id"]))["id"] == out["id"]


async def test_every_change_is_audited_without_secret_values(ctx, executor, owner):
    out = await create(executor, owner, api_key="audit-secret-0001")
    await executor.run("gateways_update", owner, {"api_key": "audit-secret-0002", "region": "eu-1"}, out["id"])
    await executor.run("gateways_delete", owner, {}, out["id"])
    events = await audit_events(ctx, owner.organization_id)
    assert [e["action"] for e in events] == ["gateway.create", "gateway.update", "gateway.delete"]
    assert all(e["actor_id"] == owner.key_id and e["resource_id"] == out["id"] for e in events)
    assert events[0]["changes"]["api_key"] == "[set]"
    assert events[1]["changes"] == {"api_key": "[changed]", "region": {"from": None, "to": "eu-1"}}
    assert "audit-secret" not in str(events) and "gAAAA" not in str(events)


async def test_refused_changes_are_not_audited(ctx, executor, owner):
    out = await create(executor, owner)
    with pytest.raises(ValidationFailed):
        await executor.run("gateways_update", owner, {"min_instances": 9}, out["id"])
    with pytest.raises(Forbidden):
        await executor.run("gateways_delete", as_role(owner, "org_viewer"), {}, out["id"])
    assert [e["action"] for e in await audit_events(ctx, owner.organization_id)] == ["gateway.create"]


async def test_an_update_that_changes_nothing_is_not_audited(ctx, executor, owner):
    out = await create(executor, owner, region="eu-1")
    assert await executor.run("gateways_update", owner, {"region": "eu-1"}, out["id"]) == out
    assert [e["action"] for e in await audit_events(ctx, owner.organization_id)] == ["gateway.create"]


async def test_audit_trail_is_listed_newest_first_filtered_and_scoped(executor, owner):
    a = await create(executor, owner, name="a")
    b = await create(executor, owner, name="b")
    await executor.run("gateways_update", owner, {"region": "r1"}, a["id"])
    key = await executor.run("keys_create", owner, {"role": "org_viewer"})
    page = await executor.run("audit_list", owner, {})
    assert [(e["action"], e["resource_id"]) for e in page["items"]] == [
        ("api_key.create", key["id"]), ("gateway.update", a["id"]), ("gateway.create", b["id"]),
        ("gateway.create", a["id"])]
    assert page["total"] == 4 and page["items"][0]["occurred_at"].endswith("Z")
    only_a = await executor.run("audit_list", owner, {"resource_type": "gateway", "resource_id": a["id"]})
    assert [e["action"] for e in only_a["items"]] == ["gateway.update", "gateway.create"]
    assert (await executor.run("audit_list", owner, {"action": "api_key.create"}))["total"] == 1
    second = await executor.run("audit_list", owner, {"limit": 2, "offset": 2})
    assert [e["resource_id"] for e in second["items"]] == [b["id"], a["id"]]
    other = Principal("other-" + owner.organization_id, "org_owner", "k")
    assert (await executor.run("audit_list", other, {}))["total"] == 0
    with pytest.raises(Forbidden):
        await executor.run("audit_list", as_role(owner, "org_member"), {})
