"""Walk the operation registry: every operation works on REST, the CLI (in process and --url), and MCP
(stdio and streamable HTTP). Each scenario arranges and checks through REST and runs the operation on
the channel under test. An operation added without a scenario here fails this test."""

from __future__ import annotations

import json
import uuid

import anyio
import httpx
import pytest

from ngm.workflows import load_operations
from tests.e2e.conftest import configuration
from tests.support.mcp_client import http_tools, stdio_tools
from tests.support.standin import StandIn

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]
REGISTRY = load_operations()
SCENARIOS = {}


def scenario(op_name):
    def register(func):
        SCENARIOS[op_name] = func
        return func

    return register


class Failed(Exception):
    """An operation answered with an error on the channel under test."""


# ------------------------------------------------------------------ channels

class RestChannel:
    def __init__(self, deployment, key):
        self.client = httpx.AsyncClient(base_url=deployment.url, headers={"X-API-Key": key}, timeout=30)

    async def call(self, op_name, params=None, resource_id=None):
        op = REGISTRY.get(op_name)
        path = op.http_path.replace("{" + (op.id_param or "") + "}", resource_id or "")
        kwargs = {"params": params} if op.input_in_query else {"json": params or {}}
        if op.input_model is None:
            kwargs = {}
        r = await self.client.request(op.method, path, **kwargs)
        if r.status_code >= 400:
            raise Failed(r.text)
        if r.status_code == 204:
            return None
        if op.output_model is not None:  # what the OpenAPI document promises is what comes back
            op.output_model.model_validate(r.json())
        return r.json()

    async def close(self):
        await self.client.aclose()


def cli_args(op, params, resource_id):
    args = [op.resource, op.cli_command] + ([resource_id] if resource_id else [])
    for name, value in (params or {}).items():
        flag = "--" + op.cli.rename.get(name, name.replace("_", "-"))
        if isinstance(value, bool):
            args.append(flag if value else flag.replace("--", "--no-", 1))
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args + ["--json"]


class CliChannel:
    def __init__(self, deployment, key, remote):
        self.deployment, self.key, self.remote = deployment, key, remote

    async def call(self, op_name, params=None, resource_id=None):
        op = REGISTRY.get(op_name)
        result = await anyio.to_thread.run_sync(
            lambda: self.deployment.cli(cli_args(op, params, resource_id), self.key, remote=self.remote))
        if result.returncode != 0:
            raise Failed(result.stderr)
        return json.loads(result.stdout)

    async def close(self):
        pass


class McpChannel:
    def __init__(self, context_manager):
        self.cm = context_manager

    async def open(self):
        self.tools = await self.cm.__aenter__()
        return self

    async def call(self, op_name, params=None, resource_id=None):
        op = REGISTRY.get(op_name)
        args = dict(params or {})
        if op.id_param:
            args[op.id_param] = resource_id
        error, body = await self.tools.call(op_name, args)
        if error:
            raise Failed(json.dumps(body))
        return body

    async def close(self):
        await self.cm.__aexit__(None, None, None)


async def open_channel(kind, deployment, key):
    if kind == "rest":
        return RestChannel(deployment, key)
    if kind in ("cli-local", "cli-remote"):
        return CliChannel(deployment, key, remote=kind == "cli-remote")
    if kind == "mcp-stdio":
        return await McpChannel(stdio_tools(deployment.env, key)).open()
    return await McpChannel(http_tools(deployment.url, key)).open()


# ------------------------------------------------------------------ scenarios (arrange and check via REST)

def gateway_body(**extra):
    return {"name": f"walk-{uuid.uuid4().hex[:8]}", "environment": "staging", "api_url": "http://127.0.0.1:9",
            **extra}


@scenario("gateways_create")
async def _(ch, rest, env):
    made = await ch.call("gateways_create", gateway_body(api_key="walk-secret-0001", region="eu-1",
                                                         auth_methods=["api_key"], ssl_enabled=False))
    assert configuration(await rest.call("gateways_get", None, made["id"])) == configuration(made)
    assert made["api_key_last4"] == "0001" and made["region"] == "eu-1"


@scenario("gateways_list")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body(environment="development"))
    page = await ch.call("gateways_list", {"environment": "development", "limit": 5})
    assert [g["id"] for g in page["items"]] == [made["id"]] and page["total"] == 1 and page["limit"] == 5


@scenario("gateways_get")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body())
    assert configuration(await ch.call("gateways_get", None, made["id"])) == configuration(made)


@scenario("gateways_update")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body())
    out = await ch.call("gateways_update", {"description": "changed", "max_instances": 2}, made["id"])
    assert out["description"] == "changed"
    assert (await rest.call("gateways_get", None, made["id"]))["max_instances"] == 2


@scenario("gateways_delete")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body())
    await ch.call("gateways_delete", {"force": False}, made["id"])
    with pytest.raises(Failed, match="not_found"):
        await rest.call("gateways_get", None, made["id"])


@scenario("gateways_check")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body(api_url=env["standin"].url, healthy_threshold=1))
    result = await ch.call("gateways_check", None, made["id"])
    assert result["status"] == "healthy" and result["gateway_id"] == made["id"]
    assert (await rest.call("gateways_get", None, made["id"]))["last_health_status"] == "ok"


@scenario("gateways_resolve")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body(environment="production"))
    assert (await ch.call("gateways_resolve", {"environment": "production"}))["id"] == made["id"]


@scenario("keys_create")
async def _(ch, rest, env):
    made = await ch.call("keys_create", {"role": "org_viewer", "name": "walk"})
    async with httpx.AsyncClient(base_url=env["url"], headers={"X-API-Key": made["key"]}) as client:
        assert (await client.get("/api/v1/gateways")).status_code == 200


@scenario("keys_list")
async def _(ch, rest, env):
    made = await rest.call("keys_create", {"role": "org_member"})
    listed = await ch.call("keys_list", {"include_revoked": False})
    assert made["id"] in [k["id"] for k in listed["items"]]


@scenario("keys_revoke")
async def _(ch, rest, env):
    made = await rest.call("keys_create", {"role": "org_member"})
    assert (await ch.call("keys_revoke", None, made["id"]))["revoked"] is True
    async with httpx.AsyncClient(base_url=env["url"], headers={"X-API-Key": made["key"]}) as client:
        assert (await client.get("/api/v1/gateways")).status_code == 401


@scenario("keys_update")
async def _(ch, rest, env):
    made = await rest.call("keys_create", {"role": "org_member"})
    updated = await ch.call("keys_update", {"name": "renamed", "rate_limit": 7, "api_rate_limit": 100}, made["id"])
    assert (updated["name"], updated["rate_limit"], updated["api_rate_limit"]) == ("renamed", 7, 100)
    listed = {k["id"]: k for k in (await rest.call("keys_list", {"include_revoked": False}))["items"]}
    assert listed[made["id"]]["rate_limit"] == 7


@scenario("keys_whoami")
async def _(ch, rest, env):
    me = await ch.call("keys_whoami")
    assert me["organization_id"] == env["org"] and me["role"] == "org_owner"
    assert me["can_change"] is True and me["can_check"] is True


@scenario("ratelimits_set")
async def _(ch, rest, env):
    gw = await rest.call("gateways_create", gateway_body())
    changed = await ch.call("ratelimits_set", {"global_rate_limit": 500, "per_user_rate_limit": 20,
                                               "rate_limit_window": 10, "rate_limit_algorithm": "token_bucket",
                                               "rate_limit_burst": 5}, gw["id"])
    assert (changed["global_rate_limit"], changed["per_user_rate_limit"], changed["rate_limit_algorithm"]) == (
        500, 20, "token_bucket")
    assert (await rest.call("gateways_get", None, gw["id"]))["rate_limit_window"] == 10


@scenario("ratelimits_get")
async def _(ch, rest, env):
    gw, dep = await _deployed(rest, env, agent="walk-limits")
    await rest.call("ratelimits_set", {"global_rate_limit": 100, "per_agent_rate_limit": 50,
                                       "per_user_rate_limit": 10}, gw["id"])
    async with httpx.AsyncClient(base_url=env["url"], headers=rest.client.headers) as client:
        for _ in range(3):
            r = await client.get("/api/v1/agents/walk-limits/invoke/health", headers={"X-NGM-Environment": "staging"})
            assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "10"
    shown = await ch.call("ratelimits_get", None, gw["id"])
    assert shown["configured"] == {"global_rate_limit": 100, "per_agent_rate_limit": 50, "per_user_rate_limit": 10}
    if not env["in_process"]:  # an in-process CLI sees the server's counts only through Redis
        assert (shown["gateway"]["used"], shown["gateway"]["remaining"]) == (3, 97)
        assert [(a["agent_id"], a["used"]) for a in shown["agents"]] == [("walk-limits", 3)]
        assert [u["used"] for u in shown["users"]] == [3]


@scenario("audit_list")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body())
    page = await ch.call("audit_list", {"resource_id": made["id"], "limit": 10})
    assert [e["action"] for e in page["items"]] == ["gateway.create"] and page["total"] == 1


@scenario("gateways_history")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body(api_url=env["standin"].url))
    await rest.call("gateways_check", None, made["id"])
    await rest.call("gateways_check", None, made["id"])
    history = await ch.call("gateways_history", {"window": "1h", "limit": 1}, made["id"])
    assert history["probes"] == 2 and history["uptime_percent"] == 100.0 and len(history["items"]) == 1


@scenario("events_list")
async def _(ch, rest, env):
    made = await rest.call("gateways_create", gateway_body(api_url=env["standin"].url, healthy_threshold=1))
    await rest.call("gateways_check", None, made["id"])
    listed = await ch.call("events_list", {"gateway_id": made["id"], "limit": 5})
    assert [(e["from_health"], e["to_health"]) for e in listed["items"]] == [("unknown", "healthy")]


async def _hook(rest, env, **extra):
    return await rest.call("webhooks_create", {"url": env["standin"].url + "/hook", **extra})


@scenario("webhooks_create")
async def _(ch, rest, env):
    made = await ch.call("webhooks_create", {"url": env["standin"].url + "/hook", "description": "walk",
                                             "events": ["health.transition"], "active": True})
    assert made["secret"].startswith("whsec_")
    assert (await rest.call("webhooks_get", None, made["id"]))["description"] == "walk"


@scenario("webhooks_list")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    assert made["id"] in [h["id"] for h in (await ch.call("webhooks_list"))["items"]]


@scenario("webhooks_get")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    got = await ch.call("webhooks_get", None, made["id"])
    assert got["url"] == made["url"] and "secret" not in got


@scenario("webhooks_update")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    assert (await ch.call("webhooks_update", {"active": False}, made["id"]))["active"] is False
    assert (await rest.call("webhooks_get", None, made["id"]))["active"] is False


@scenario("webhooks_delete")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    await ch.call("webhooks_delete", None, made["id"])
    with pytest.raises(Failed, match="not_found"):
        await rest.call("webhooks_get", None, made["id"])


@scenario("webhooks_rotate_secret")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    rotated = await ch.call("webhooks_rotate_secret", None, made["id"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]


@scenario("webhooks_test")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    queued = await ch.call("webhooks_test", None, made["id"])
    assert queued["webhook_id"] == made["id"] and queued["event_type"] == "webhook.test"
    for _ in range(50):  # the server's dispatcher delivers it
        if [p for p in env["standin"].posts() if p["headers"].get("X-NGM-Event-ID") == queued["event_id"]]:
            break
        await anyio.sleep(0.1)
    else:
        raise AssertionError("the test delivery never arrived")


@scenario("webhooks_deliveries")
async def _(ch, rest, env):
    made = await _hook(rest, env)
    await rest.call("webhooks_test", None, made["id"])
    listed = await ch.call("webhooks_deliveries", {"limit": 10}, made["id"])
    # the organization's gateways on the stand-in may turn healthy meanwhile: those transitions are delivered too
    assert [d["event_type"] for d in listed["items"] if d["event_type"] != "health.transition"] == ["webhook.test"]


async def _deployed(rest, env, weight=100, agent=None):
    gw = await rest.call("gateways_create", gateway_body(api_url=env["standin"].url))
    agent = agent or f"agent-{uuid.uuid4().hex[:6]}"
    dep = await rest.call("deployments_create", {"gateway_id": gw["id"], "agent_id": agent, "agent_version": "v1",
                                                 "weight": weight})
    return gw, dep


@scenario("deployments_create")
async def _(ch, rest, env):
    gw = await rest.call("gateways_create", gateway_body())
    made = await ch.call("deployments_create", {"gateway_id": gw["id"], "agent_id": "walker", "agent_version": "v1",
                                                "workspace_id": "ws-1", "weight": 60})
    assert (made["weight"], made["status"], made["workspace_id"]) == (60, "active", "ws-1")
    assert (await rest.call("deployments_get", None, made["id"]))["gateway_id"] == gw["id"]


@scenario("deployments_list")
async def _(ch, rest, env):
    gw, dep = await _deployed(rest, env)
    page = await ch.call("deployments_list", {"gateway_id": gw["id"], "status": "active", "limit": 5})
    assert [d["id"] for d in page["items"]] == [dep["id"]] and page["total"] == 1


@scenario("deployments_get")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    assert (await ch.call("deployments_get", None, dep["id"]))["agent_id"] == dep["agent_id"]


@scenario("deployments_update")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    assert (await ch.call("deployments_update", {"weight": 7}, dep["id"]))["weight"] == 7
    assert (await rest.call("deployments_get", None, dep["id"]))["weight"] == 7


@scenario("deployments_drain")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    drained = await ch.call("deployments_drain", {"timeout_seconds": 5}, dep["id"])
    assert drained["status"] == "draining" and drained["in_flight"] == 0


@scenario("deployments_deactivate")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    assert (await ch.call("deployments_deactivate", None, dep["id"]))["status"] == "inactive"


@scenario("deployments_activate")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    await rest.call("deployments_deactivate", None, dep["id"])
    assert (await ch.call("deployments_activate", None, dep["id"]))["status"] == "active"


@scenario("deployments_delete")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env)
    await ch.call("deployments_delete", None, dep["id"])
    with pytest.raises(Failed, match="not_found"):
        await rest.call("deployments_get", None, dep["id"])


@scenario("routing_set")
async def _(ch, rest, env):
    made = await ch.call("routing_set", {"agent_id": "walk-set", "environment": "staging",
                                         "strategy": "geographic", "fallback_regions": ["eu-west-1"]})
    assert made["strategy"] == "geographic"
    got = await rest.call("routing_get", {"agent_id": "walk-set", "environment": "staging"})
    assert got["fallback_regions"] == ["eu-west-1"] and got["default"] is False


@scenario("routing_get")
async def _(ch, rest, env):
    got = await ch.call("routing_get", {"agent_id": "walk-none", "environment": "development"})
    assert got["default"] is True and got["strategy"] == "weighted"


@scenario("routing_list")
async def _(ch, rest, env):
    await rest.call("routing_set", {"agent_id": "walk-list", "environment": "staging", "strategy": "round_robin"})
    listed = await ch.call("routing_list", {"agent_id": "walk-list"})
    assert [p["strategy"] for p in listed["items"]] == ["round_robin"]


@scenario("routing_delete")
async def _(ch, rest, env):
    await rest.call("routing_set", {"agent_id": "walk-del", "environment": "staging", "strategy": "round_robin"})
    assert await ch.call("routing_delete", {"agent_id": "walk-del", "environment": "staging"}) == {
        "agent_id": "walk-del", "environment": "staging"}
    assert (await rest.call("routing_get", {"agent_id": "walk-del", "environment": "staging"}))["default"] is True


@scenario("route_explain")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env, agent="walk-route")
    route = await ch.call("route_explain", {"agent_id": "walk-route", "environment": "staging",
                                            "region": "eu-west-1", "routing_key": "u1"})
    assert route["deployment"]["deployment_id"] == dep["id"] and route["known"] is True


@scenario("ratelimits_check")
async def _(ch, rest, env):
    gw, dep = await _deployed(rest, env, agent="walk-check")
    await rest.call("ratelimits_set", {"per_agent_rate_limit": 5, "rate_limit_window": 60}, gw["id"])
    check = await ch.call("ratelimits_check", {"agent_id": "walk-check", "environment": "staging",
                                               "client_ip": "203.0.113.9", "path": "workflows/chat/execute"})
    assert (check["admitted"], check["status"], check["scope"]) == (True, 200, "agent")
    assert check["deployment_id"] == dep["id"] and [s["remaining"] for s in check["scopes"]] == [5]


@scenario("agents_traffic")
async def _(ch, rest, env):
    _, dep = await _deployed(rest, env, agent="walk-traffic")
    traffic = await ch.call("agents_traffic", {"environment": "staging", "window": "1m"}, "walk-traffic")
    assert [d["deployment_id"] for d in traffic["deployments"]] == [dep["id"]] and traffic["window_seconds"] == 60


# ------------------------------------------------------------------ the walk

def test_every_operation_has_a_scenario():
    assert sorted(SCENARIOS) == sorted(op.name for op in REGISTRY)


@pytest.mark.parametrize("kind", ["rest", "cli-local", "cli-remote", "mcp-stdio", "mcp-http"])
async def test_every_operation_works_on_the_channel(deployment, backend, kind):
    org, key = deployment.new_org()
    standin = StandIn("healthy")
    rest = RestChannel(deployment, key)
    channel = await open_channel(kind, deployment, key)
    env = {"standin": standin, "url": deployment.url, "org": org,
           "in_process": kind in ("cli-local", "mcp-stdio") and "NGM_REDIS_URL" not in deployment.env}
    try:
        for op in REGISTRY:
            try:
                await SCENARIOS[op.name](channel, rest, env)
            except Exception as exc:
                raise AssertionError(f"{op.name} on {kind}: {exc}") from exc
    finally:
        await channel.close()
        await rest.close()
        standin.stop()
