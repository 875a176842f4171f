import pytest

from ngm.nodes.events.signing import backoff_seconds, new_secret, sign, verify

BODY = b'{"type": "health.transition"}'


def test_signature_verifies_and_binds_the_body_secret_and_time():
    secret = new_secret()
    header = sign(secret, 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=")
    assert verify(secret, header, BODY, now=1_700_000_010)
    assert not verify(secret, header, BODY + b" ", now=1_700_000_010)
    assert not verify(new_secret(), header, BODY, now=1_700_000_010)
    forged = header.replace("t=1700000000", "t=1700000100")
    assert not verify(secret, forged, BODY, now=1_700_000_100)


def test_old_signatures_are_replays():
    secret = new_secret()
    assert not verify(secret, sign(secret, 1_000, BODY), BODY, now=1_000 + 301)
    assert verify(secret, sign(secret, 1_000, BODY), BODY, now=1_000 + 299)


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=00", "v1=00"])
def test_malformed_headers_fail(header):
    assert not verify("s", header, BODY, now=0)


def test_backoff_doubles_with_jitter_and_a_cap():
    assert [backoff_seconds(a, rng=lambda: 0.5) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(20, rng=lambda: 0.5) == 600.0
    assert 1.6 <= backoff_seconds(1, rng=lambda: 0.0) <= backoff_seconds(1, rng=lambda: 0.999) <= 2.4
