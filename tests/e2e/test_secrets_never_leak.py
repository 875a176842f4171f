"""A gateway's API key never appears in a response, CLI output, MCP result or log line, on any channel.
The server runs at DEBUG, the most talkative level, so third-party logging is let through too."""

import json

import pytest

from tests.e2e.conftest import make_key
from tests.support.mcp_client import http_tools, stdio_tools
from tests.support.processes import ServerProcess, ngm_env, run_cli
from tests.support.standin import StandIn

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]
SECRETS = ["leak-canary-AAAA-1111", "leak-canary-BBBB-2222", "leak-canary-CCCC-3333", "leak-canary-DDDD-4444"]


async def test_gateway_keys_appear_nowhere(tmp_path):
    url = f"sqlite:///{tmp_path / 'ngm.db'}"
    env = ngm_env(tmp_path / "data", url, NGM_LOG_LEVEL="DEBUG")
    org = "leak-org"
    key = make_key(url, org)
    server = ServerProcess(env, tmp_path / "server.log").wait_ready()
    standin = StandIn("healthy")
    seen: list[str] = []
    try:
        import httpx

        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as rest:
            r = rest.post("/api/v1/gateways", json={"name": "leaky", "environment": "production",
                                                    "api_url": standin.url, "api_key": SECRETS[0]})
            gw = r.json()
            seen.append(r.text)
            for resp in (rest.get("/api/v1/gateways"), rest.get(f"/api/v1/gateways/{gw['id']}"),
                         rest.put(f"/api/v1/gateways/{gw['id']}", json={"api_key": SECRETS[1]}),
                         rest.post(f"/api/v1/gateways/{gw['id']}/health"),
                         rest.get("/api/v1/gateways/resolve", params={"environment": "production"}),
                         rest.put(f"/api/v1/gateways/{gw['id']}", json={"api_key": SECRETS[1] + " bad"})):
                seen.append(resp.text)
        assert standin.requests[-1]["headers"]["X-API-Key"] == SECRETS[1]  # it was used, just never shown

        cli_env = {**env, "NGM_ORG": org}
        for args, stdin in [(["gateways", "update", gw["id"], "--gateway-api-key", "-"], SECRETS[2] + "\n"),
                            (["gateways", "get", gw["id"]], None), (["gateways", "list"], None),
                            (["gateways", "check", gw["id"]], None), (["gateways", "get", gw["id"], "--json"], None),
                            (["gateways", "update", gw["id"], "--gateway-api-key", "has space"], None)]:
            result = run_cli(args, cli_env, input=stdin)
            seen += [result.stdout, result.stderr]
        remote = run_cli(["gateways", "get", gw["id"], "--url", server.url, "--api-key", key], env)
        seen += [remote.stdout, remote.stderr]

        for tools_cm in (http_tools(server.url, key), stdio_tools(env, key)):
            async with tools_cm as tools:
                for name, args in [("gateways_update", {"gateway_id": gw["id"], "api_key": SECRETS[3]}),
                                   ("gateways_get", {"gateway_id": gw["id"]}), ("gateways_list", {}),
                                   ("gateways_check", {"gateway_id": gw["id"]}),
                                   ("gateways_update", {"gateway_id": gw["id"], "api_key": SECRETS[3] + "\nx"})]:
                    seen.append(json.dumps(await tools.call(name, args)))
        assert standin.requests[-1]["headers"]["X-API-Key"] == SECRETS[3]
    finally:
        server.stop()
        standin.stop()
    log = server.log()
    assert "DEBUG" in log  # the talkative level really was on
    for secret in SECRETS:
        for text in seen + [log]:
            assert secret not in text
    assert key not in log
