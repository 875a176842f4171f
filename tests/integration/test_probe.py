"""The health probe against real servers on 127.0.0.1: outcomes, Nexus JSON, and outbound safety."""

import time

import anyio
import pytest

from ngm.nodes.health.probe import ProbeClient, probe
from ngm.nodes.outbound.policy import OutboundPolicy
from tests.support.standin import StandIn, closed_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client():
    c = ProbeClient(OutboundPolicy())
    yield c
    await c.close()


@pytest.fixture
def servers():
    made = []

    def make(*args, **kwargs):
        made.append(StandIn(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.stop()


async def test_success_with_nexus_health_json(client, servers):
    s = servers(body={"status": "healthy", "workflows": {"chat": "healthy", "search": "unhealthy",
                                                         "billing": "error", "proxy": "unknown"}})
    r = await probe(client, s.url + "/health", "k-1")
    assert (r.outcome, r.http_status, r.unhealthy_workflows) == ("ok", 200, ["billing", "search"])
    assert s.gets()[0]["headers"]["X-API-Key"] == "k-1"


async def test_workflow_names_no_database_can_store_are_left_out(client, servers):
    """A gateway's answer is anybody's text: an unpaired surrogate or NUL stored would break every read after."""
    names = {"\ud800x": "failed", "a\x00b": "failed", "x" * 201: "failed", "billing": "failed", "ok": "healthy"}
    s = servers(body={"status": "degraded\udfff", "workflows": names})
    r = await probe(client, s.url + "/health", None)
    assert r.unhealthy_workflows == ["billing"]


async def test_reported_unhealthy_with_200_is_a_failure(client, servers):
    s = servers(body={"status": "unhealthy", "workflows": {}})
    assert (await probe(client, s.url + "/health", None)).outcome == "reported_unhealthy"


@pytest.mark.parametrize("mode, outcome", [("error", "http_error"), ("drop", "error")])
async def test_failures(client, servers, mode, outcome):
    r = await probe(client, servers(mode).url + "/readyz", None)
    assert r.outcome == outcome and not r.ok
    assert r.summary == ("http_503" if mode == "error" else "error")


async def test_timeout_is_enforced_over_the_whole_probe(client, servers):
    start = time.monotonic()
    r = await probe(client, servers("slow", delay=30.0).url, None, timeout=0.3)
    assert r.outcome == "timeout" and time.monotonic() - start < 5.0  # not the 30 s the server takes
    await anyio.sleep(0.1)
    assert not client.pool._open  # the connection left waiting is closed, not kept until the gateway answers


async def test_no_connection_outlives_its_probe(client, servers):
    """100,000 gateways probed every 30 s must not hold 100,000 idle connections."""
    s = servers()
    for _ in range(3):
        assert (await probe(client, s.url + "/health", None)).outcome == "ok"
    huge = await probe(client, servers("huge").url + "/health", None)
    await anyio.sleep(0.05)
    assert huge.outcome == "ok" and not client.pool._open
    assert all(g["headers"]["Connection"] == "close" for g in s.gets())


async def test_connection_refused(client):
    assert (await probe(client, f"http://127.0.0.1:{closed_port()}/health", None)).outcome == "connection_refused"


async def test_tls_error_for_an_untrusted_certificate(client, servers):
    s = servers(tls=True)
    r = await probe(client, s.url + "/health", "never-sent")
    assert r.outcome == "tls_error"


async def test_dns_failure(client):
    assert (await probe(client, "http://no-such-host.invalid/health", None)).outcome == "dns_error"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
                                 "http://0.0.0.0:9/", "http://100.100.100.200/"])
async def test_metadata_and_link_local_addresses_are_refused(client, url):
    r = await probe(client, url, "secret")
    assert r.outcome == "address_blocked" and "NGM_OUTBOUND_ALLOW" in r.error


async def test_an_operator_may_allow_a_blocked_range(servers):
    assert OutboundPolicy.from_setting("169.254.0.0/16").permits("169.254.1.1")  # decided, nothing connects
    assert not OutboundPolicy().permits("169.254.1.1")
    # and through a probe, on loopback: blocked as a range, allowed back for one address
    loopback = OutboundPolicy.from_setting("127.0.0.0/8").allowed
    s = servers()
    blocked = ProbeClient(OutboundPolicy(blocked=OutboundPolicy().blocked + loopback))
    allowed = ProbeClient(OutboundPolicy(blocked=OutboundPolicy().blocked + loopback,
                                            allowed=OutboundPolicy.from_setting("127.0.0.1/32").allowed))
    try:
        assert (await probe(blocked, s.url + "/health", None)).outcome == "address_blocked"
        assert (await probe(allowed, s.url + "/health", None)).outcome == "ok"
    finally:
        await blocked.close()
        await allowed.close()


async def test_names_that_resolve_to_blocked_addresses_are_refused():
    client = ProbeClient(OutboundPolicy(blocked=OutboundPolicy().blocked + OutboundPolicy.from_setting(
        "127.0.0.0/8").allowed))  # treat loopback as blocked so that "localhost" exercises the resolver
    try:
        r = await probe(client, "http://localhost:9/health", "secret")
    finally:
        await client.close()
    assert r.outcome == "address_blocked" and "localhost resolves to 127.0.0.1" in r.error


async def test_a_confined_client_refuses_names_without_looking_them_up(servers, monkeypatch):
    import asyncio

    looked_up = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def recording(host, *args, **kwargs):
        looked_up.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", recording)
    client = ProbeClient(OutboundPolicy.from_setting("", "127.0.0.0/8"))
    s = servers()
    try:
        refused = await probe(client, "https://gw.example.com/health", "secret")
        outside = await probe(client, "http://10.255.255.1:9/health", "secret")
        served = await probe(client, f"http://localhost:{s.port}/health", None)
    finally:
        await client.close()
    assert refused.outcome == "address_blocked" and "NGM_OUTBOUND_ONLY" in refused.error
    assert outside.outcome == "address_blocked" and "outside NGM_OUTBOUND_ONLY" in outside.error
    assert served.outcome == "ok" and looked_up == ["localhost"]
    confined = ProbeClient(OutboundPolicy.from_setting("", "10.0.0.0/8"))
    try:  # localhost looked up, then refused by what it resolves to
        outside_names = await probe(confined, f"http://localhost:{s.port}/health", None)
    finally:
        await confined.close()
    assert outside_names.outcome == "address_blocked"
    assert "localhost resolves to 127.0.0.1, outside NGM_OUTBOUND_ONLY's networks" in outside_names.error


@pytest.mark.parametrize("url", ["http://0.0.0.\U0001FBF0:9/health", "http://169.254.169.25\U0001FBF4/latest"])
async def test_a_host_aiohttp_reads_as_a_blocked_address_is_refused_before_connecting(url):
    """A URL stored before writes were held to one reading: checked as aiohttp (yarl) reads it, as every earlier
    check was, not as Python does."""
    class NoRequests:
        async def request(self, *args, **kwargs):
            raise AssertionError("a request was started")

    client = ProbeClient(OutboundPolicy())
    real_pool, client.pool = client.pool, NoRequests()
    try:
        r = await probe(client, url, "secret")
    finally:
        await real_pool.close()
    assert r.outcome == "address_blocked" and "link-local or metadata" in r.error


def test_policy_checks_ipv4_mapped_ipv6():
    assert not OutboundPolicy().permits("::ffff:169.254.169.254")
    assert OutboundPolicy().permits("127.0.0.1") and OutboundPolicy().permits("10.1.2.3")


async def test_redirects_to_another_origin_are_refused(client, servers):
    other = servers()
    s = servers("redirect", redirect_to=other.url + "/health")
    r = await probe(client, s.url + "/health", "gw-secret")
    assert r.outcome == "redirect_refused" and other.requests == []


async def test_redirects_within_the_origin_are_followed_with_the_key(client, servers):
    s = servers("redirect", redirect_to="/health/")
    r = await probe(client, s.url + "/health", "gw-secret")
    assert r.outcome == "ok" and [g["path"] for g in s.gets()] == ["/health", "/health/"]
    assert all(g["headers"]["X-API-Key"] == "gw-secret" for g in s.gets())


async def test_redirect_loops_stop_after_three_hops(client, servers):
    s = servers("redirect", redirect_to="/elsewhere")
    s.redirect_to = s.url + "/health"  # absolute, same origin, back to itself
    r = await probe(client, s.url + "/health", None)
    assert r.outcome == "redirect_refused" and len(s.gets()) == 4


async def test_the_key_is_sent_only_to_the_gateways_own_origin(client, servers):
    own, elsewhere = servers(), servers()
    await probe(client, elsewhere.url + "/health", "gw-secret", key_origin=own.url)
    await probe(client, own.url + "/readyz", "gw-secret", key_origin=own.url + "/api")
    assert "X-API-Key" not in elsewhere.gets()[0]["headers"]
    assert own.gets()[0]["headers"]["X-API-Key"] == "gw-secret"


async def test_bodies_are_read_only_up_to_the_cap(client, servers):
    start = time.monotonic()
    r = await probe(client, servers("huge").url + "/health", None, timeout=5.0)
    assert r.outcome == "ok" and time.monotonic() - start < 2.0


async def test_a_gateway_cannot_flood_the_probe_with_its_head_or_its_redirect(client):
    """What a gateway sends is bounded before it is kept: a response head past 64 KB fails the probe (and the
    router's exchange) at once; a refused redirect's description quotes at most 100 characters of its host."""
    import asyncio

    sent = {"head": 0}

    async def flood(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for _ in range(40_000):  # 40 MB of header lines, unless the probe hangs up first
                writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
                sent["head"] += 1009
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    async def redirect(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://" + b"a" * 5000
                     + b".example/\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for handler in (flood, redirect)]
    try:
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        flooded = await probe(client, f"http://127.0.0.1:{ports[0]}/health", None, timeout=5.0)
        assert flooded.outcome == "error" and "larger than 64 KB" in flooded.error
        assert sent["head"] < 20_000_000  # the probe hung up; it did not read it all
        moved = await probe(client, f"http://127.0.0.1:{ports[1]}/health", None)
        assert moved.outcome == "redirect_refused" and len(moved.error) < 200, len(moved.error)
    finally:
        for s in servers:
            s.close()
