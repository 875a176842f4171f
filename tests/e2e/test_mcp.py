"""MCP tools for AI agents through the official client: stdio (`ngm mcp`) and streamable HTTP (/mcp)."""

import uuid

import httpx
import pytest

from tests.e2e.conftest import configuration
from tests.support.mcp_client import http_tools, stdio_tools

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def transport(kind, deployment, key):
    if kind == "http":
        return http_tools(deployment.url, key)
    return stdio_tools(deployment.env, key)


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_tools_have_typed_schemas_and_work(deployment, kind):
    org, key = deployment.new_org()
    async with transport(kind, deployment, key) as tools:
        listed = {t.name: t for t in await tools.list()}
        assert {"gateways_create", "gateways_list", "gateways_get", "gateways_update", "gateways_delete",
                "gateways_check", "gateways_resolve", "keys_create", "keys_list", "keys_revoke"} <= set(listed)
        schema = listed["gateways_create"].input_schema
        assert schema["type"] == "object" and {"name", "environment", "api_url"} <= set(schema["required"])
        assert schema["properties"]["environment"]["enum"] == ["development", "staging", "production"]
        assert schema["additionalProperties"] is False
        assert listed["gateways_get"].input_schema["required"] == ["gateway_id"]
        assert listed["gateways_list"].annotations.read_only_hint is True
        for question in ("route_explain", "ratelimits_check"):  # POSTs that change nothing, on ngm's own data
            hints = listed[question].annotations
            assert (hints.read_only_hint, hints.idempotent_hint, hints.open_world_hint) == (True, True, False)
        assert listed["gateways_check"].annotations.open_world_hint is True
        assert listed["gateways_create"].annotations.read_only_hint is False
        assert listed["gateways_delete"].annotations.destructive_hint is True
        assert "org_admin" in listed["gateways_create"].description

        name = f"mcp-{uuid.uuid4().hex[:6]}"
        error, gw = await tools.call("gateways_create", {"name": name, "environment": "staging",
                                                         "api_url": "http://127.0.0.1:9", "api_key": "mcp-SECRET-1"})
        assert not error and gw["name"] == name and gw["organization_id"] == org and gw["api_key_last4"] == "ET-1"
        error, page = await tools.call("gateways_list", {"environment": "staging"})
        assert not error and [g["id"] for g in page["items"]] == [gw["id"]]
        error, upd = await tools.call("gateways_update", {"gateway_id": gw["id"], "region": "us-east-1"})
        assert not error and upd["region"] == "us-east-1"
        error, out = await tools.call("gateways_delete", {"gateway_id": gw["id"]})
        assert not error and out["id"] == gw["id"]


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_tool_errors_are_structured_and_name_the_field(deployment, kind):
    org, key = deployment.new_org()
    async with transport(kind, deployment, key) as tools:
        error, body = await tools.call("gateways_create", {"name": "x", "environment": "moon", "api_url": "http://x"})
        assert error and body["status"] == 422 and body["error"]["details"][0]["field"] == "environment"
        error, body = await tools.call("gateways_get", {"gateway_id": "missing"})
        assert error and body["status"] == 404
        error, body = await tools.call("gateways_nothing", {})
        assert error and body["error"]["code"] == "unknown_tool"


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_tools_have_exactly_the_permissions_of_the_key(deployment, kind):
    org, owner_key = deployment.new_org()
    viewer = deployment.key(org, "org_viewer")
    async with transport(kind, deployment, viewer) as tools:
        error, body = await tools.call("gateways_create", {"name": "x", "environment": "staging", "api_url": "http://x"})
        assert error and body["status"] == 403
        error, page = await tools.call("gateways_list", {})
        assert not error and page["total"] == 0


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_other_organizations_records_are_404(deployment, kind):
    _, key_a = deployment.new_org()
    _, key_b = deployment.new_org()
    with deployment.client(key_a) as a:
        gw = a.post("/api/v1/gateways", json={"name": "a", "environment": "staging", "api_url": "http://x"}).json()
    async with transport(kind, deployment, key_b) as tools:
        for name, args in [("gateways_get", {}), ("gateways_update", {"description": "x"}),
                           ("gateways_delete", {"force": True}), ("gateways_check", {})]:
            error, body = await tools.call(name, {"gateway_id": gw["id"], **args})
            assert error and body["status"] == 404, name
    with deployment.client(key_a) as a:
        assert configuration(a.get(f"/api/v1/gateways/{gw['id']}").json()) == configuration(gw)


async def test_mcp_over_http_needs_an_api_key(deployment):
    async with httpx.AsyncClient() as http:
        r = await http.post(deployment.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                            headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_stdio_refuses_to_start_with_a_bad_key(deployment):
    from tests.support.processes import run_cli

    result = run_cli(["mcp", "--api-key", "ngm_" + "z" * 43], deployment.env)
    assert result.returncode == 3 and "invalid or revoked API key" in result.stderr


async def test_stdio_can_forward_to_a_running_server(deployment):
    org, key = deployment.new_org()
    async with stdio_tools(deployment.env, key, url=deployment.url) as tools:
        error, gw = await tools.call("gateways_create", {"name": "fwd", "environment": "staging", "api_url": "http://x"})
        assert not error and gw["organization_id"] == org
        error, body = await tools.call("gateways_get", {"gateway_id": "missing"})
        assert error and body["status"] == 404
