"""Webhooks: transitions are delivered once each, signed; failures are retried with backoff and visible."""

import json
import time
from ipaddress import ip_network

import pytest

from ngm.errors import Forbidden, NotFound, ValidationFailed
from ngm.models.query import select, update
from ngm.models.rows import utcnow
from ngm.nodes.auth.keys import Principal
from ngm.nodes.events.dispatcher import WebhookDispatcher
from ngm.nodes.events.signing import verify
from ngm.nodes.health.monitor import HealthMonitor
from ngm.nodes.outbound.policy import OutboundClient, OutboundPolicy
from ngm.workflows.executor import Executor
from tests.integration.conftest import as_role

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(monitor_ctx, org, standin):
    ctx = monitor_ctx
    executor = Executor(ctx)
    owner = Principal(org, "org_owner", "k", "tester")
    monitor = HealthMonitor(ctx.health_store, ctx.recorder, ctx.keyring, ctx.probes)
    dispatcher = WebhookDispatcher(ctx.database, ctx.keyring, ctx.outbound, max_attempts=3)
    return ctx, executor, owner, monitor, dispatcher, standin


async def drain(ctx, dispatcher):
    """Deliver everything due now (also retries whose time has come)."""
    while await dispatcher.run_once():
        pass


async def test_each_transition_arrives_once_signed(env):
    ctx, executor, owner, monitor, dispatcher, standin = env
    receiver, gateway_server = standin(), standin("healthy")
    hook = await executor.run("webhooks_create", owner, {"url": receiver.url + "/hooks", "description": "ops"})
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["health.transition"]
    other_owner = Principal("x-" + owner.organization_id, "org_owner", "k")
    other_org_hook = await executor.run("webhooks_create", other_owner, {"url": receiver.url + "/other"})
    gw = await executor.run("gateways_create", owner, {
        "name": "hooked", "environment": "production", "api_url": gateway_server.url, "healthy_threshold": 1,
        "unhealthy_threshold": 1, "health_grace_period": 0})
    await monitor.sweep()                      # unknown -> healthy
    gateway_server.mode = "error"
    await monitor.sweep()                      # healthy -> unhealthy (active -> error)
    await monitor.sweep()                      # no transition
    await drain(ctx, dispatcher)
    await drain(ctx, dispatcher)               # nothing is sent twice
    posts = receiver.posts()
    assert [p["path"] for p in posts] == ["/hooks", "/hooks"]
    events = [json.loads(p["body"]) for p in posts]
    assert [(e["data"]["from_health"], e["data"]["to_health"]) for e in events] == [("unknown", "healthy"),
                                                                                   ("healthy", "unhealthy")]
    assert events[1]["data"]["to_status"] == "error" and events[1]["data"]["gateway_id"] == gw["id"]
    assert len({e["id"] for e in events}) == 2
    for post, event in zip(posts, events):
        headers = post["headers"]
        assert verify(hook["secret"], headers["X-NGM-Signature"], post["body"], now=time.time())
        assert headers["X-NGM-Event"] == "health.transition" and headers["X-NGM-Event-ID"] == event["id"]
    deliveries = await executor.run("webhooks_deliveries", owner, {}, hook["id"])
    assert [d["status"] for d in deliveries["items"]] == ["delivered", "delivered"]
    assert all(d["last_status_code"] == 200 and d["attempts"] == 1 for d in deliveries["items"])
    assert (await executor.run("webhooks_deliveries", owner, {"status": "pending"}, hook["id"]))["items"] == []
    # another organization's webhook hears nothing of these transitions (no post to /other, nothing queued)
    assert (await executor.run("webhooks_deliveries", other_owner, {}, other_org_hook["id"]))["items"] == []


async def test_failed_deliveries_are_retried_with_backoff_then_given_up(env):
    ctx, executor, owner, monitor, dispatcher, standin = env
    receiver = standin(post_status=500)
    hook = await executor.run("webhooks_create", owner, {"url": receiver.url})
    queued = await executor.run("webhooks_test", owner, None, hook["id"])
    assert queued["event_type"] == "webhook.test"
    await drain(ctx, dispatcher)
    [first] = (await executor.run("webhooks_deliveries", owner, {}, hook["id"]))["items"]
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    assert first["last_error"] == "answered HTTP 500"
    assert first["next_attempt_at"] > utcnow().isoformat()  # backed off into the future, not retried at once
    assert len(receiver.posts()) == 1
    for _ in (2, 3):  # make the retries due now instead of waiting for the backoff
        await update(ctx.database, "WebhookDelivery", first["id"], {"next_attempt_at": utcnow()})
        await drain(ctx, dispatcher)
    [last] = (await executor.run("webhooks_deliveries", owner, {}, hook["id"]))["items"]
    assert (last["status"], last["attempts"]) == ("failed", 3) and len(receiver.posts()) == 3
    receiver.post_status = 200
    await executor.run("webhooks_test", owner, None, hook["id"])
    await drain(ctx, dispatcher)
    statuses = [d["status"] for d in (await executor.run("webhooks_deliveries", owner, {}, hook["id"]))["items"]]
    assert statuses == ["delivered", "failed"]


async def test_an_inactive_webhook_gets_nothing_until_activated(env):
    """(health.transition is the only event a webhook subscribes to, so "inactive" is the way to hear nothing.)"""
    ctx, executor, owner, monitor, dispatcher, standin = env
    receiver, gateway_server = standin(), standin("healthy")
    hook = await executor.run("webhooks_create", owner, {"url": receiver.url, "active": False})
    await executor.run("gateways_create", owner, {"name": "g", "environment": "staging", "api_url": gateway_server.url,
                                                  "healthy_threshold": 1, "unhealthy_threshold": 1,
                                                  "health_grace_period": 0})
    await monitor.sweep()  # unknown -> healthy: a transition the inactive webhook does not get
    await drain(ctx, dispatcher)
    assert receiver.posts() == []
    assert (await executor.run("webhooks_deliveries", owner, {}, hook["id"]))["items"] == []
    assert (await executor.run("webhooks_update", owner, {"active": True}, hook["id"]))["active"] is True
    gateway_server.mode = "error"
    await monitor.sweep()  # healthy -> unhealthy: now it does
    await drain(ctx, dispatcher)
    [post] = receiver.posts()
    assert json.loads(post["body"])["data"]["to_health"] == "unhealthy"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://[64:ff9b::a9fe:a9fe]/",
                                 "http://[::ffff:169.254.169.254]/", "http://１６９.254.169.254/"])
async def test_webhook_urls_to_metadata_addresses_are_refused_when_written(env, url):
    ctx, executor, owner, monitor, dispatcher, standin = env
    with pytest.raises(ValidationFailed) as info:
        await executor.run("webhooks_create", owner, {"url": url}, source="json")
    assert info.value.details[0]["field"] == "url" and "link-local or metadata" in info.value.message
    hook = await executor.run("webhooks_create", owner, {"url": "http://127.0.0.1:9/"})
    with pytest.raises(ValidationFailed):
        await executor.run("webhooks_update", owner, {"url": url}, hook["id"], source="json")
    assert (await executor.run("webhooks_get", owner, None, hook["id"]))["url"] == "http://127.0.0.1:9/"


async def test_a_delivery_the_policy_refuses_fails_at_once(env):
    """A host name that resolves to a blocked address is refused when called: the delivery fails with that
    reason after one attempt instead of being retried. (Loopback stands in for the blocked range here.)"""
    ctx, executor, owner, monitor, dispatcher, standin = env
    receiver = standin()
    hook = await executor.run("webhooks_create", owner, {"url": receiver.url.replace("127.0.0.1", "localhost")})
    strict = OutboundClient(OutboundPolicy(blocked=(ip_network("127.0.0.0/8"), ip_network("::1/128"))))
    try:
        await executor.run("webhooks_test", owner, None, hook["id"])
        await drain(ctx, WebhookDispatcher(ctx.database, ctx.keyring, strict, max_attempts=8))
    finally:
        await strict.close()
    [d] = (await executor.run("webhooks_deliveries", owner, {}, hook["id"]))["items"]
    assert (d["status"], d["attempts"]) == ("failed", 1) and "link-local or metadata" in d["last_error"]
    assert receiver.posts() == []


async def test_secret_rotation_signs_with_the_new_secret(env):
    ctx, executor, owner, monitor, dispatcher, standin = env
    receiver = standin()
    hook = await executor.run("webhooks_create", owner, {"url": receiver.url})
    rotated = await executor.run("webhooks_rotate_secret", owner, None, hook["id"])
    assert rotated["secret"] != hook["secret"]
    await executor.run("webhooks_test", owner, None, hook["id"])
    await drain(ctx, dispatcher)
    [post] = receiver.posts()
    assert verify(rotated["secret"], post["headers"]["X-NGM-Signature"], post["body"], now=time.time())
    assert not verify(hook["secret"], post["headers"]["X-NGM-Signature"], post["body"], now=time.time())


async def test_webhook_management(env):
    ctx, executor, owner, monitor, dispatcher, standin = env
    hook = await executor.run("webhooks_create", owner, {"url": "https://hooks.example.com/ngm"})
    listed = await executor.run("webhooks_list", owner, None)
    assert [h["id"] for h in listed["items"]] == [hook["id"]] and "secret" not in listed["items"][0]
    assert "secret_encrypted" not in await executor.run("webhooks_get", owner, None, hook["id"])
    with pytest.raises(ValidationFailed) as info:
        await executor.run("webhooks_create", owner, {"url": "ftp://x", "events": ["nope"]})
    assert {d["field"] for d in info.value.details} == {"url", "events.0"}
    with pytest.raises(Forbidden):
        await executor.run("webhooks_list", as_role(owner, "org_member"), None)
    with pytest.raises(NotFound):
        await executor.run("webhooks_get", Principal("zz-" + owner.organization_id, "org_owner", "k"), None,
                           hook["id"])
    await executor.run("webhooks_delete", owner, None, hook["id"])
    assert (await executor.run("webhooks_list", owner, None))["items"] == []
    assert await select(ctx.database, "Webhook", {"organization_id": owner.organization_id}) == []


async def test_transitions_are_listed(env):
    ctx, executor, owner, monitor, dispatcher, standin = env
    server = standin("healthy")
    gw = await executor.run("gateways_create", owner, {"name": "t", "environment": "staging", "api_url": server.url,
                                                       "healthy_threshold": 1, "unhealthy_threshold": 1,
                                                       "health_grace_period": 0})
    await monitor.sweep()
    server.mode = "error"
    await monitor.sweep()
    listed = await executor.run("events_list", owner, {"gateway_id": gw["id"]})
    assert [(e["from_health"], e["to_health"]) for e in listed["items"]] == [("healthy", "unhealthy"),
                                                                            ("unknown", "healthy")]
    since = listed["items"][0]["occurred_at"]
    recent = await executor.run("events_list", owner, {"since": since})
    assert [e["to_health"] for e in recent["items"]] == ["unhealthy"]
    assert (await executor.run("events_list", Principal("q-" + owner.organization_id, "org_viewer", "k"),
                               {}))["items"] == []
