"""Pure rules at the edges: which invoke paths may reach a gateway, what a gateway is told about the caller,
which addresses an outbound call may reach and how a URL may spell one."""

from ipaddress import ip_network

import pytest

from ngm.dataplane.invoke import forwarded_lines, invoke_target
from ngm.nodes.gateways.validation import check_http_url
from ngm.nodes.outbound.policy import OutboundPolicy


@pytest.mark.parametrize("rest", [b"../../etc/passwd", b"a/./b", b"..", b"%2e%2e/x", b"%2E%2e/x", b".%2e/x",
                                  b"%252e%252e/x", b"..%2fetc", b"a%2Fb", b"..\\etc", b"a%5cb", b"%25252e%25252e",
                                  b"a/..;/x", b"a/%2e%2e;/x", b".;x", b"a/%c0%ae%c0%ae/x", b"a/%u002e%u002e/x",
                                  b"%ef%bc%8e%ef%bc%8e/x", "．．/x".encode(), b"a%ef%bc%8fb", b"..%00/x", b"..%09",
                                  "％2e％2e/x".encode(), b"%ef%b9%aa2e%ef%b9%aa2e/x"])
def test_paths_that_could_leave_the_base_path_are_refused(rest):
    assert invoke_target(b"/api/v1/agents/bot/invoke/" + rest, b"") == ("bot", None)


@pytest.mark.parametrize("path, target", [
    (b"/api/v1/agents/bot/invoke", b"/"), (b"/api/v1/agents/bot/invoke/", b"/"),
    (b"/api/v1/agents/bot/invoke/workflows/chat/execute", b"/workflows/chat/execute"),
    (b"/api/v1/agents/bot/invoke/a..b/.hidden/x%20y", b"/a..b/.hidden/x%20y"),
    (b"/api/v1/agents/b%6Ft/invoke/x", b"/x"),
])
def test_ordinary_paths_pass_as_sent(path, target):
    agent, sent = invoke_target(path, b"")
    assert agent == "bot" and sent == target
    assert invoke_target(path, b"q=1&r=%2e%2e") == ("bot", target + b"?q=1&r=%2e%2e")  # the query is not a path


@pytest.mark.parametrize("path", [b"/api/v1/agents/bot/%69nvoke/../../x", b"/api/v1/agents//invoke/x",
                                  b"/api/v1/agents/a%2Fb/invoke/x", b"/api/v1/agents/bot/invokes"])
def test_what_is_not_an_invoke_path_goes_elsewhere(path):
    assert invoke_target(path, b"") is None


def test_the_gateway_hears_who_called_from_what_the_router_saw():
    lines = forwarded_lines("10.1.2.3", "http")
    assert lines == (b"\r\nx-forwarded-proto: http\r\nx-forwarded-for: 10.1.2.3\r\nx-real-ip: 10.1.2.3\r\n"
                     b"forwarded: for=10.1.2.3;proto=http\r\n")
    assert b'for="[::1]"' in forwarded_lines("::1", "https")


def test_a_trusted_proxy_s_chain_is_extended_and_its_client_believed():
    trusted = (ip_network("10.0.0.0/8"),)
    headers = {b"x-forwarded-for": b"198.51.100.7, 10.0.0.9", b"forwarded": b"for=198.51.100.7",
               b"x-forwarded-proto": b"https"}
    lines = forwarded_lines("10.0.0.2", "http", headers, trusted)
    assert b"x-forwarded-for: 198.51.100.7, 10.0.0.9, 10.0.0.2\r\n" in lines
    assert b"x-real-ip: 198.51.100.7\r\n" in lines and b"x-forwarded-proto: https\r\n" in lines
    assert b"forwarded: for=198.51.100.7, for=10.0.0.2;proto=http\r\n" in lines  # each hop says its own
    # a client that forged a chain gets no further than the rightmost address no trusted proxy vouches for
    forged = forwarded_lines("10.0.0.2", "http", {b"x-forwarded-for": b"1.1.1.1, 203.0.113.5"}, trusted)
    assert b"x-real-ip: 203.0.113.5\r\n" in forged


@pytest.mark.parametrize("address", [
    "169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b:1:a9fe:a9:fe00::",
    "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:5601:5601", "::169.254.169.254", "fe80::1", "fe80::1%eth0",
    "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::", "::ffff:0:a9fe:a9fe", "::ffff:0:169.254.169.254",
    "64:ff9b:1:101:1:101:a9fe:a9fe", "64:ff9b:1:a9:fe:a9fe::", "64:ff9b:1:0:a9:fea9:fe00:0",  # /96, /56, /64 layouts
])
def test_every_spelling_of_a_blocked_address_is_blocked(address):
    assert not OutboundPolicy().permits(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "2001:db8::1", "64:ff9b::a00:1"])
def test_ordinary_addresses_pass(address):
    assert OutboundPolicy().permits(address)


def test_an_allowed_range_is_allowed_in_every_spelling():
    policy = OutboundPolicy.from_setting("169.254.10.0/24")
    assert policy.permits("169.254.10.5") and policy.permits("::ffff:169.254.10.5")
    assert not policy.permits("169.254.169.254")


@pytest.mark.parametrize("url", ["http://2852039166/", "http://0251.0376.0251.0376/", "http://0xa9fea9fe/",
                                 "http://169.254.43518/", "http://10.0.0.05/", "http://1.2.3.4./", "http://%31.2.3.4/"])
def test_non_canonical_ipv4_spellings_are_refused(url):
    with pytest.raises(ValueError):
        check_http_url(url)


@pytest.mark.parametrize("url", ["http://[64:ff9b::a9fe:a9fe]/", "http://169.254.169.254/", "http://１６９.254.169.254/",
                                 "http://[::ffff:a9fe:a9fe]:8080/x"])
def test_literal_blocked_addresses_are_refused_when_written(url):
    assert "link-local or metadata" in OutboundPolicy().literal_refusal(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:", "http://[::1]:/x", "http://gw.example:/"])
def test_a_url_with_an_empty_port_is_refused(url):
    with pytest.raises(ValueError, match="port"):
        check_http_url(url)


def test_a_confined_policy_permits_only_its_networks_and_says_why():
    policy = OutboundPolicy.from_setting("", "127.0.0.0/8,::1/128")
    assert policy.permits("127.0.0.1") and policy.permits("127.9.9.9") and policy.permits("::1")
    for outside in ("10.0.0.5", "93.184.216.34", "2001:db8::1", "169.254.169.254", "::ffff:10.0.0.5"):
        assert not policy.permits(outside)
    assert policy.literal_refusal("http://10.0.0.5:8000") == "10.0.0.5 is outside NGM_OUTBOUND_ONLY's networks"
    assert policy.literal_refusal("http://127.0.0.1:8000") is None
    assert OutboundPolicy().permits("10.0.0.5")  # unconfined: private ranges are gateways' usual homes


@pytest.mark.parametrize("host", ["gw.example.com", "localhost.example.com", "metadata.google.internal",
                                  "xn--bcher-kva.example", "localhost.", "LOCALHOST..", "localhost.localdomain"])
def test_a_confined_policy_refuses_names_before_they_are_looked_up(host):
    from ngm.nodes.outbound.policy import OutboundRefused

    policy = OutboundPolicy.from_setting("", "127.0.0.0/8")
    with pytest.raises(OutboundRefused) as refused:
        policy.check_name(host)
    assert refused.value.outcome == "address_blocked" and host in refused.value.message
    for name in ("localhost", "LOCALHOST", "127.0.0.1", "[::1]"):
        policy.check_name(name)  # looked up (or literal), then checked against the networks
    OutboundPolicy().check_name("gw.example.com")  # unconfined: names resolve as usual
