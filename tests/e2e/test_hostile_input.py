"""Hostile input at the real interfaces of a running `ngm serve` (SQLite, and PostgreSQL with Redis): body
limits and the order of checks, JSON that is not what it claims, text and numbers the databases cannot
take, paths that try to leave a gateway's base path, headers that try to speak for the router, races
between operations, and the same answers on REST, the CLI and MCP."""

from __future__ import annotations

import json
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.test_router import INVOKE, Fleet
from tests.support.mcp_client import http_tools
from tests.support.standin import StandIn

pytestmark = pytest.mark.e2e
MB = 1024 * 1024


@pytest.fixture
def fleet(deployment):
    f = Fleet(deployment)
    yield f
    f.close()


def assert_error(response: httpx.Response, status: int, field: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if field is not None:
        assert field in {d["field"] for d in error["details"]}, error
    if code is not None:
        assert error["code"] == code, error
    return error


# ---------------------------------------------------------------- bodies


def test_a_body_over_the_limit_is_refused_before_it_is_read(deployment):
    org, owner = deployment.new_org()
    with deployment.client(owner) as c:
        big = b'{"name": "' + b"x" * (2 * MB) + b'"}'
        assert_error(c.post("/api/v1/gateways", content=big, headers={"content-type": "application/json"}), 413,
                     "body", "body_too_large")

        def chunks():  # no Content-Length: counted while it is read
            for _ in range(40):
                yield b" " * 65536

        assert_error(c.post("/api/v1/gateways", content=chunks()), 413, "body", "body_too_large")
        assert c.get("/api/v1/gateways").json()["total"] == 0  # nothing was created by either
        r = c.post("/mcp", content=b" " * (2 * MB), headers={"content-type": "application/json",
                                                             "accept": "application/json, text/event-stream"})
        assert_error(r, 413, "body")


def test_the_role_is_checked_before_the_body_is_read(deployment):
    org, _ = deployment.new_org()
    viewer = deployment.key(org, "org_viewer")
    with deployment.client(viewer) as c:
        for body in (b'{"name": 5}', b"not json", b'{"' + b"x" * 100 + b'": 1}', b" " * (2 * MB)):
            assert_error(c.post("/api/v1/gateways", content=body), 403, code="insufficient_role")
    with deployment.client(None) as anonymous:
        assert_error(anonymous.post("/api/v1/gateways", content=b"x" * (2 * MB)), 401)


@pytest.mark.parametrize("body, message", [
    (b'{"name": "\xff\xfe"}', "is not valid UTF-8"), (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply"),
    (b"{'name': 1}", "is not valid JSON"), (b"[1, 2]", "must be a JSON object"),
])
def test_bodies_that_are_not_json_objects_name_the_body(deployment, body, message):
    org, owner = deployment.new_org()
    with deployment.client(owner) as c:
        error = assert_error(c.post("/api/v1/gateways", content=body), 422, "body")
        assert error["details"] == [{"field": "body", "message": message}]


def test_a_post_whose_fields_are_all_optional_takes_no_body(fleet):
    gateway, _ = fleet.gateway()
    dep = fleet.deploy(gateway)
    r = fleet.client.post(f"/api/v1/deployments/{dep['id']}/drain")  # no body at all
    assert r.status_code == 202 and r.json()["status"] == "draining"


# ---------------------------------------------------------------- types, text and numbers


@pytest.mark.parametrize("field, value", [("weight", True), ("weight", "50"), ("weight", 1.5), ("rate_limit", False),
                                          ("agent_version", 5), ("workspace_id", ["w"])])
def test_json_bodies_are_validated_strictly(fleet, field, value):
    gateway, _ = fleet.gateway()
    body = {"gateway_id": gateway["id"], "agent_id": "bot", "agent_version": "v1", field: value}
    assert_error(fleet.client.post("/api/v1/deployments", json=body), 422, field)
    assert fleet.client.get("/api/v1/deployments").json()["total"] == 0


def test_lists_and_strings_have_bounded_lengths(fleet):
    r = fleet.client.put("/api/v1/routing/policies", json={"agent_id": "bot", "environment": "production",
                                                           "fallback_regions": ["eu"] * 100_000})
    assert_error(r, 422, "fallback_regions")
    assert_error(fleet.client.post("/api/v1/gateways", json={"name": "x" * 10_000, "environment": "production",
                                                             "api_url": "http://127.0.0.1:9"}), 422, "name")


def test_text_the_database_cannot_store_is_refused_the_same_on_both(deployment):
    org, owner = deployment.new_org()
    with deployment.client(owner) as c:
        gw = c.post("/api/v1/gateways", json={"name": "n", "environment": "staging", "api_url": "http://127.0.0.1:9"})
        gid = gw.json()["id"]
        for method, path, kw, field in [
            ("POST", "/api/v1/gateways", {"json": {"name": "a\x00b", "environment": "staging",
                                                   "api_url": "http://127.0.0.1:9"}}, "name"),
            ("PUT", f"/api/v1/gateways/{gid}", {"json": {"description": "a\x00b"}}, "description"),
            ("PUT", f"/api/v1/gateways/{gid}", {"content": b'{"description": "\\ud800"}'}, "description"),
            ("GET", "/api/v1/deployments", {"params": {"agent_id": "a\x00b"}}, "agent_id"),
            ("GET", "/api/v1/audit", {"params": {"resource_type": "a\x00"}}, "resource_type"),
            ("POST", "/api/v1/keys", {"json": {"role": "org_viewer", "name": "\x00"}}, "name"),
            ("POST", "/api/v1/webhooks", {"json": {"url": "http://127.0.0.1:9/", "description": "\x00"}},
             "description"),
        ]:
            assert_error(c.request(method, path, **kw), 422, field)
        assert_error(c.get("/api/v1/gateways/a%00b"), 422, "gateway_id")


def test_numbers_beyond_their_bounds_are_refused_on_every_channel(deployment):
    org, owner = deployment.new_org()
    with deployment.client(owner) as c:
        for offset in ("2147483648", "9223372036854775808", "-1"):
            for path in ("/api/v1/gateways", "/api/v1/deployments", "/api/v1/audit"):
                assert_error(c.get(path, params={"offset": offset}), 422, "offset")
        gw = c.post("/api/v1/gateways", json={"name": "w", "environment": "staging",
                                              "api_url": "http://127.0.0.1:9"}).json()
        assert_error(c.get(f"/api/v1/gateways/{gw['id']}/health/history", params={"window": "99999999999h"}), 422,
                     "window")
        assert_error(c.get("/api/v1/agents/bot/traffic", params={"window": "99999999999h"}), 422, "window")
    cli = deployment.cli(["gateways", "list", "--offset", "9223372036854775808"], owner)
    assert cli.returncode == 2 and "offset" in cli.stderr
    local = deployment.cli(["gateways", "list", "--offset", "2147483648", "--org", org], remote=False)
    assert local.returncode == 2 and "offset" in local.stderr

    async def over_mcp():
        async with http_tools(deployment.url, owner) as tools:
            failed, body = await tools.call("gateways_list", {"offset": 2147483648})
            assert failed and body["status"] == 422 and body["error"]["details"][0]["field"] == "offset"
            failed, body = await tools.call("deployments_create", {"gateway_id": gw["id"], "agent_id": "bot",
                                                                   "agent_version": "v1", "weight": True})
            assert failed and body["error"]["details"][0]["field"] == "weight"

    import anyio
    anyio.run(over_mcp)


def test_the_cli_still_converts_its_own_option_strings(fleet):
    gateway, _ = fleet.gateway()
    dep = fleet.deploy(gateway)
    r = fleet.deployment.cli(["deployments", "update", dep["id"], "--weight", "50", "--json"], fleet.key)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["weight"] == 50


def test_null_is_refused_for_fields_a_model_requires(fleet):
    hook = fleet.client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}).json()
    for field in ("events", "active", "url"):
        assert_error(fleet.client.put(f"/api/v1/webhooks/{hook['id']}", json={field: None}), 422, field)
    assert fleet.client.get(f"/api/v1/webhooks/{hook['id']}").json() == {k: v for k, v in hook.items()
                                                                         if k != "secret"}
    assert fleet.client.put(f"/api/v1/webhooks/{hook['id']}", json={"description": None}).status_code == 200


# ---------------------------------------------------------------- outbound addresses


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://[64:ff9b::a9fe:a9fe]/",
                                 "http://[::ffff:169.254.169.254]/", "http://[2002:a9fe:a9fe::]/",
                                 "http://2852039166/", "http://0251.0376.0251.0376/", "http://[fe80::1]/"])
def test_blocked_and_disguised_addresses_are_refused_when_written(fleet, url):
    for field in ("api_url", "health_check_url"):
        body = {"name": f"g-{uuid.uuid4().hex[:6]}", "environment": "staging", "api_url": "http://127.0.0.1:9",
                field: url}
        assert_error(fleet.client.post("/api/v1/gateways", json=body), 422, field)
    assert_error(fleet.client.post("/api/v1/webhooks", json={"url": url}), 422, "url")
    assert fleet.client.get("/api/v1/gateways").json()["total"] == 0


# ---------------------------------------------------------------- the router's edge


def raw_request(url: str, target: str, headers: dict[str, str] | list[tuple[str, str]]) -> tuple[int, bytes]:
    """A request sent exactly as given: its target (as `curl --path-as-is` does), repeated headers."""
    host, port = url.removeprefix("http://").split(":")
    pairs = headers.items() if isinstance(headers, dict) else headers
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in pairs),
             *([] if any(k.lower() == "connection" for k, _ in pairs) else ["Connection: close"]), "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("rest", ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2fetc", "..\\etc", "a/./b",
                                  "%252e%252e/x", ".%2E/x", "a%2fb", "a%5Cb"])
def test_a_forwarded_path_never_leaves_the_gateway_base_path(fleet, rest):
    gateway, standin = fleet.gateway()
    fleet.deploy(gateway)
    before = len(standin.gets())
    status, answer = raw_request(fleet.deployment.url, f"/api/v1/agents/{fleet.agent}/invoke/{rest}",
                                 {"X-API-Key": fleet.key})
    assert status == 400 and b"invalid_path" in answer
    assert [r for r in standin.gets()[before:] if not r["path"].startswith("/health")] == []
    ok, _ = raw_request(fleet.deployment.url, f"/api/v1/agents/{fleet.agent}/invoke/workflows/a..b/execute",
                        {"X-API-Key": fleet.key})
    assert ok == 200


def test_the_gateway_hears_who_called_from_the_router_not_from_the_caller(fleet):
    gateway, standin = fleet.gateway(StandIn(answer_headers=[("Connection", "X-Internal"), ("X-Internal", "secret"),
                                                             ("Connection", "keep-alive"), ("X-Kept", "1")]))
    fleet.deploy(gateway)
    r = fleet.invoke(headers={"Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-For": "6.6.6.6",
                              "X-Forwarded-Proto": "https", "Connection": "keep-alive, X-Hop",
                              "X-Hop": "drop me", "X-Stay": "keep me", "Proxy-Connection": "keep-alive",
                              "Keep-Alive": "timeout=5"})
    assert r.status_code == 200, r.text
    seen = {k.lower(): v for k, v in invoke_requests(standin)[-1]["headers"].items()}
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
    assert seen["forwarded"] == "for=127.0.0.1;proto=http" and seen["x-forwarded-proto"] == "http"
    assert "x-hop" not in seen and "proxy-connection" not in seen and "keep-alive" not in seen
    assert seen["x-stay"] == "keep me"
    assert "x-internal" not in {k.lower() for k in r.headers} and r.headers["x-kept"] == "1"
    # a second Connection header does not hide the first one's list
    status, answer = raw_request(fleet.deployment.url, INVOKE.format(agent=fleet.agent), [
        ("X-API-Key", fleet.key), ("Connection", "X-Drop-Me"), ("X-Drop-Me", "leaked"), ("Connection", "close")])
    assert status == 200 and b"x-internal" not in answer.lower()
    assert "x-drop-me" not in {k.lower() for k in invoke_requests(standin)[-1]["headers"]}


def invoke_requests(standin) -> list[dict]:
    return [r for r in standin.gets() if not r["path"].startswith("/health")]


# ---------------------------------------------------------------- races over HTTP


def test_a_create_racing_a_delete_never_leaves_a_deployment_on_a_deleted_gateway(deployment):
    org, owner = deployment.new_org()
    both = 0
    with deployment.client(owner) as c, ThreadPoolExecutor(2) as pool:
        for i in range(20):
            gw = c.post("/api/v1/gateways", json={"name": f"race-{i}", "environment": "staging",
                                                  "api_url": "http://127.0.0.1:9"}).json()
            created = pool.submit(c.post, "/api/v1/deployments", json={"gateway_id": gw["id"], "agent_id": "bot",
                                                                         "agent_version": f"v{i}"})
            deleted = pool.submit(c.delete, f"/api/v1/gateways/{gw['id']}")
            codes = (created.result().status_code, deleted.result().status_code)
            assert codes in ((201, 409), (404, 204)), codes
            both += codes == (201, 204)
        gateways = {g["id"] for g in c.get("/api/v1/gateways", params={"limit": 500}).json()["items"]}
        deployments = c.get("/api/v1/deployments", params={"limit": 500}).json()["items"]
        assert both == 0 and all(d["gateway_id"] in gateways for d in deployments)


def test_a_trusted_proxy_s_forwarded_chain_is_extended(tmp_path):
    from tests.e2e.conftest import make_key
    from tests.support.processes import ServerProcess, ngm_env

    url = f"sqlite:///{tmp_path / 'ngm.db'}"
    server = ServerProcess(ngm_env(tmp_path / "data", url, NGM_MONITOR="off", NGM_TRUSTED_PROXIES="127.0.0.0/8"),
                           tmp_path / "server.log").wait_ready()
    standin = StandIn()
    try:
        key = make_key(url, "org-proxy")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as c:
            gw = c.post("/api/v1/gateways", json={"name": "g", "environment": "production", "api_url": standin.url})
            c.post("/api/v1/deployments", json={"gateway_id": gw.json()["id"], "agent_id": "bot", "agent_version": "1"})
            r = c.get(INVOKE.format(agent="bot"), headers={"X-Forwarded-For": "198.51.100.7",
                                                           "X-Forwarded-Proto": "https"})
            assert r.status_code == 200, r.text
        seen = {k.lower(): v for k, v in invoke_requests(standin)[-1]["headers"].items()}
        assert seen["x-forwarded-for"] == "198.51.100.7, 127.0.0.1" and seen["x-real-ip"] == "198.51.100.7"
        assert seen["x-forwarded-proto"] == "https"
    finally:
        server.stop()
        standin.stop()


def test_a_field_given_twice_is_refused(deployment):
    org, owner = deployment.new_org()
    with deployment.client(owner) as c:
        body = b'{"name": "a", "name": "b", "environment": "staging", "api_url": "http://127.0.0.1:9"}'
        error = assert_error(c.post("/api/v1/gateways", content=body), 422, "name")
        assert error["details"] == [{"field": "name", "message": "is given twice"}]
        assert c.get("/api/v1/gateways").json()["total"] == 0


def test_the_router_does_not_invite_a_body_over_its_limit(fleet):
    gateway, standin = fleet.gateway()
    fleet.deploy(gateway)
    host, port = fleet.deployment.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {INVOKE.format(agent=fleet.agent)} HTTP/1.1\r\nHost: x\r\nX-API-Key: {fleet.key}\r\n"
                  f"Content-Length: {20 * MB}\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer
    assert invoke_requests(standin) == []


def test_a_field_given_twice_is_refused_over_mcp_too(deployment):
    org, owner = deployment.new_org()
    call = (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "gateways_list", '
            b'"arguments": {"limit": 5, "limit": 6}}}')
    with deployment.client(owner) as c:
        r = c.post("/mcp", content=call, headers={"content-type": "application/json",
                                                   "accept": "application/json, text/event-stream"})
        assert_error(r, 422, "limit")


def test_more_than_one_key_presented_is_refused(fleet):
    gateway, standin = fleet.gateway()
    fleet.deploy(gateway)
    other_org, other_key = fleet.deployment.new_org()
    for headers in ([("X-API-Key", fleet.key), ("X-API-Key", other_key)],
                    [("Authorization", f"Bearer {other_key}"), ("X-API-Key", fleet.key)]):
        for path in ("/api/v1/keys/me", INVOKE.format(agent=fleet.agent)):
            status, answer = raw_request(fleet.deployment.url, path, headers)
            assert status == 401 and b"conflicting_credentials" in answer, (path, answer[:300])
    assert invoke_requests(standin) == []


def test_header_names_with_underscores_do_not_reach_the_gateway(fleet):
    gateway, standin = fleet.gateway()
    fleet.deploy(gateway)
    status, _ = raw_request(fleet.deployment.url, INVOKE.format(agent=fleet.agent),
                            [("X-API-Key", fleet.key), ("X_API_Key", "forged"), ("X_Forwarded_For", "6.6.6.6")])
    assert status == 200
    assert not [k for k in invoke_requests(standin)[-1]["headers"] if "_" in k]
