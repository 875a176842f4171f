"""The REST API of a real `ngm serve` process, over real HTTP."""

import time
import uuid

import pytest

from tests.e2e.conftest import configuration
from tests.support.standin import StandIn

pytestmark = pytest.mark.e2e


def body(name=None, **extra):
    return {"name": name or f"gw-{uuid.uuid4().hex[:8]}", "environment": "production",
            "api_url": "https://gw.example.com", **extra}


def error_fields(resp) -> dict:
    return {d["field"]: d["message"] for d in resp.json()["error"]["details"]}


@pytest.fixture
def owner(deployment):
    org, key = deployment.new_org()
    with deployment.client(key) as client:
        yield client


def test_full_lifecycle_with_the_design_status_codes(deployment, owner):
    standin = StandIn("healthy")
    try:
        r = owner.post("/api/v1/gateways", json=body("edge-eu", api_url=standin.url, api_key="gw-key-SECRET-42",
                                                     region="eu-west-1", healthy_threshold=1))
        assert r.status_code == 201, r.text
        gw = r.json()
        assert gw["api_key_set"] is True and gw["api_key_last4"] == "T-42" and "gw-key-SECRET" not in r.text

        r = owner.get("/api/v1/gateways", params={"environment": "production", "limit": 10})
        assert r.status_code == 200 and r.json()["total"] == 1 and r.json()["items"][0]["id"] == gw["id"]
        assert configuration(owner.get(f"/api/v1/gateways/{gw['id']}").json()) == configuration(gw)

        r = owner.put(f"/api/v1/gateways/{gw['id']}", json={"description": "edge in Ireland", "max_instances": 3})
        assert r.status_code == 200 and r.json()["description"] == "edge in Ireland"
        assert r.json()["region"] == "eu-west-1"

        r = owner.post(f"/api/v1/gateways/{gw['id']}/health")
        assert r.status_code == 200
        assert set(r.json()) >= {"status", "last_check", "response_time_ms"} and r.json()["status"] == "healthy"
        assert standin.requests[-1]["headers"]["X-API-Key"] == "gw-key-SECRET-42"

        r = owner.get("/api/v1/gateways/resolve", params={"environment": "production"})
        assert r.status_code == 200 and r.json()["id"] == gw["id"]

        r = owner.delete(f"/api/v1/gateways/{gw['id']}")
        assert r.status_code == 204 and r.content == b""
        assert owner.get(f"/api/v1/gateways/{gw['id']}").status_code == 404
    finally:
        standin.stop()


def test_bearer_and_x_api_key_both_authenticate(deployment):
    _, key = deployment.new_org()
    with deployment.client(None) as anon:
        assert anon.get("/api/v1/gateways", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert anon.get("/api/v1/gateways", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "nope"}, {"Authorization": "Bearer ngm_" + "A" * 43},
                                     {"Authorization": "Basic dXNlcjpwdw=="}])
def test_missing_or_bad_credentials_are_401_with_json(deployment, headers):
    with deployment.client(None) as anon:
        r = anon.post("/api/v1/gateways", json=body(), headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_revoked_key_is_refused(deployment, owner):
    made = owner.post("/api/v1/keys", json={"role": "org_viewer"}).json()
    with deployment.client(made["key"]) as viewer:
        assert viewer.get("/api/v1/gateways").status_code == 200
        assert owner.delete(f"/api/v1/keys/{made['id']}").json()["revoked"] is True
        assert viewer.get("/api/v1/gateways").status_code == 401


def test_weak_roles_get_403_and_change_nothing(deployment, owner):
    gw = owner.post("/api/v1/gateways", json=body()).json()
    org = gw["organization_id"]
    for role in ("org_viewer", "org_member"):
        with deployment.client(deployment.key(org, role)) as weak:
            assert weak.get(f"/api/v1/gateways/{gw['id']}").status_code == 200
            for method, path, payload in [("POST", "/api/v1/gateways", body()),
                                          ("PUT", f"/api/v1/gateways/{gw['id']}", {"name": "hijacked"}),
                                          ("DELETE", f"/api/v1/gateways/{gw['id']}", None)]:
                r = weak.request(method, path, json=payload)
                assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role", (role, method)
    assert configuration(owner.get(f"/api/v1/gateways/{gw['id']}").json()) == configuration(gw)
    assert owner.get("/api/v1/gateways").json()["total"] == 1


def test_another_organization_gets_404_on_every_route(deployment, owner):
    gw = owner.post("/api/v1/gateways", json=body()).json()
    _, other_key = deployment.new_org()
    with deployment.client(other_key) as other:
        for method, path, payload in [("GET", f"/api/v1/gateways/{gw['id']}", None),
                                      ("PUT", f"/api/v1/gateways/{gw['id']}", {"description": "x"}),
                                      ("DELETE", f"/api/v1/gateways/{gw['id']}", None),
                                      ("POST", f"/api/v1/gateways/{gw['id']}/health", None)]:
            r = other.request(method, path, json=payload)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path)
        assert other.get("/api/v1/gateways").json() == {"items": [], "total": 0, "limit": 50, "offset": 0,
                                                    "next_cursor": None}
    assert configuration(owner.get(f"/api/v1/gateways/{gw['id']}").json()) == configuration(gw)


@pytest.mark.parametrize("payload, fields", [
    ({}, {"name", "environment", "api_url"}),
    (body(environment="prod"), {"environment"}),
    (body(api_url="ftp://x"), {"api_url"}),
    (body(api_port=0), {"api_port"}),
    (body(api_port="many"), {"api_port"}),
    (body(min_instances=3, max_instances=2), {"min_instances"}),
    (body(global_rate_limit=-1), {"global_rate_limit"}),
    (body(auth_methods="api_key"), {"auth_methods"}),
    (body(name=["x"]), {"name"}),
    (body(name="x" * 5000), {"name"}),
    (body(unexpected=True), {"unexpected"}),
    (body(status="error"), {"status"}),
    ([1, 2], {"body"}),
    ("just a string", {"body"}),
    (None, {"body"}),
])
def test_bad_bodies_are_422_naming_the_field_and_create_nothing(owner, payload, fields):
    r = owner.post("/api/v1/gateways", json=payload)
    assert r.status_code == 422, r.text
    assert set(error_fields(r)) == fields
    assert owner.get("/api/v1/gateways").json()["total"] == 0


def test_malformed_json_is_422(owner):
    r = owner.post("/api/v1/gateways", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and error_fields(r) == {"body": "is not valid JSON"}


def test_conflicts_are_409(deployment, owner):
    owner.post("/api/v1/gateways", json=body("same"))
    r = owner.post("/api/v1/gateways", json=body("same"))
    assert r.status_code == 409 and error_fields(r) == {"name": r.json()["error"]["message"]}


def test_delete_with_active_deployments_is_409_unless_forced(deployment, owner):
    gw = owner.post("/api/v1/gateways", json=body()).json()
    _deploy(deployment.database_url, gw)
    r = owner.delete(f"/api/v1/gateways/{gw['id']}")
    assert r.status_code == 409 and r.json()["error"]["details"]["active_deployments"] == 1
    assert owner.get(f"/api/v1/gateways/{gw['id']}").status_code == 200
    assert owner.delete(f"/api/v1/gateways/{gw['id']}", params={"force": "true"}).status_code == 204


def _deploy(database_url, gw):
    import asyncio

    from ngm.models.database import open_database
    from ngm.models.query import insert
    from ngm.models.rows import new_id, utcnow

    async def go():
        db = await open_database(database_url, create=False)
        await insert(db, "GatewayDeployment", {
            "id": new_id(), "organization_id": gw["organization_id"], "gateway_id": gw["id"], "agent_id": "bot",
            "agent_version": "1", "deployed_at": utcnow(), "deployed_by": "test"})
        await db.close()

    asyncio.run(go())


@pytest.mark.parametrize("params, fields", [({"environment": "nope"}, {"environment"}), ({"limit": 0}, {"limit"}),
                                            ({"limit": "ten"}, {"limit"}), ({"sort": "name"}, {"sort"})])
def test_bad_query_parameters_are_422(owner, params, fields):
    r = owner.get("/api/v1/gateways", params=params)
    assert r.status_code == 422 and set(error_fields(r)) == fields


def test_unknown_routes_and_methods_answer_json(owner):
    assert owner.get("/api/v1/nothing").json()["error"]["code"] == "not_found"
    r = owner.patch("/api/v1/gateways")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_nexus_builtin_execution_routes_are_not_served(deployment):
    with deployment.client(None) as anon:
        for method, path in [("GET", "/workflows"), ("POST", "/workflows/gateways_create/execute"),
                             ("POST", "/enterprise/workflows/gateways_create/execute_async"),
                             ("GET", "/durability/status"), ("GET", "/enterprise/features")]:
            assert anon.request(method, path, json={"inputs": {}}).status_code == 404, path


def test_health_endpoints(deployment):
    with deployment.client(None) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        ready = anon.get("/readyz").json()
        assert ready["status"] == "ready" and ready["checks"]["database"]["ok"] is True
        # the router's hot path runs compiled (setup.py), every module built from the source beside it
        assert ready["checks"]["hot_path"]["compiled"] >= 10 and ready["checks"]["hot_path"]["as_source"] == []


def test_openapi_describes_the_real_bodies(deployment):
    with deployment.client(None) as anon:
        spec = anon.get("/openapi.json").json()
        assert anon.get("/docs").status_code == 200
    create = spec["paths"]["/api/v1/gateways"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][ref]
    assert {"name", "environment", "api_url"} <= set(schema["required"])
    assert schema["properties"]["environment"]["enum"] == ["development", "staging", "production"]
    assert schema["properties"]["api_port"]["anyOf"][0] == {"type": "integer", "maximum": 65535, "minimum": 1}
    assert schema["additionalProperties"] is False
    assert set(create["responses"]) >= {"201", "401", "403", "409", "422"}
    listing = spec["paths"]["/api/v1/gateways"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"environment", "status", "health_status", "limit", "offset",
                                                          "cursor"}
    assert spec["paths"]["/api/v1/gateways/{gateway_id}"]["delete"]["responses"].keys() >= {"204", "404", "409"}
    out = spec["components"]["schemas"]["GatewayOut"]["properties"]
    assert "api_key_last4" in out and "api_key" not in out and "api_key_encrypted" not in out
    assert not any(p.startswith("/workflows") for p in spec["paths"])


def test_one_log_line_per_request_naming_the_key_id_not_the_key(deployment, owner):
    marker = uuid.uuid4().hex
    r = owner.get("/api/v1/gateways", headers={"X-Request-ID": marker})
    assert r.headers["x-request-id"] == marker
    deadline = time.monotonic() + 2  # access lines are written in batches, at most 50 ms late
    while time.monotonic() < deadline and marker not in deployment.server.log():
        time.sleep(0.02)
    time.sleep(0.1)  # a second line, if one were written, would be in the same batch
    lines = [ln for ln in deployment.server.log().splitlines() if marker in ln]
    assert len(lines) == 1
    assert '"GET /api/v1/gateways" 200' in lines[0] and "key=key_" in lines[0]
    assert owner.headers["x-api-key"] not in deployment.server.log()
