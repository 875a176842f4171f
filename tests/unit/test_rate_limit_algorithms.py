"""The two rate-limit algorithms at window edges, with a controllable clock (milliseconds)."""

import random

import pytest

from ngm.dataplane.limits.algorithms import Scope, sliding_window, token_bucket
from ngm.dataplane.limits.limiter import Limits, headers_for, request_scopes
from ngm.dataplane.limits.memory import MemoryBackend


class Clock:
    def __init__(self, ms: float = 0):
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def test_sliding_window_allows_the_limit_then_refuses_until_the_weight_fades():
    out, index = sliding_window(5, 1000, 10_000, 4, 0)
    assert out.allowed and out.remaining == 0 and out.used == 5 and index == 10 and out.reset_ms == 1000
    refused, _ = sliding_window(5, 1000, 10_000, 5, 0)
    # the next window starts in 1000 ms, where the full one weighs 5 * (1 - t/1000): below 5 from t = 1 ms
    assert not refused.allowed and refused.retry_ms == 1001
    assert sliding_window(5, 1000, 11_000, 0, 5)[0].allowed is False
    assert sliding_window(5, 1000, 11_001, 0, 5)[0].allowed is True


def test_sliding_window_previous_window_weighs_at_the_edge():
    # 5 admitted at the very end of window 10: at the start of window 11 they weigh fully
    assert not sliding_window(5, 1000, 11_000, 0, 5)[0].allowed
    out, _ = sliding_window(5, 1000, 11_500, 2, 4)  # 4 * 0.5 + 2 = 4 used
    assert out.allowed and out.remaining == 0
    refused, _ = sliding_window(5, 1000, 11_500, 4, 4)  # 2 + 4 = 6: wait until 4 * (1 - t) < 1, t > 750
    assert not refused.allowed and refused.retry_ms == 251
    assert not sliding_window(5, 1000, 11_750, 4, 4)[0].allowed and sliding_window(5, 1000, 11_751, 4, 4)[0].allowed


def test_token_bucket_allows_its_burst_then_the_steady_rate():
    tat, allowed = None, []
    for now in (0, 0, 0, 0):  # burst 3 at 10 per second
        out, new_tat = token_bucket(10, 1000, 3, now, tat)
        allowed.append(out.allowed)
        if out.allowed:
            tat = new_tat
    assert allowed == [True, True, True, False]
    refused, _ = token_bucket(10, 1000, 3, 0, tat)
    assert refused.retry_ms == 100
    assert not token_bucket(10, 1000, 3, 99, tat)[0].allowed
    out, tat = token_bucket(10, 1000, 3, 100, tat)
    assert out.allowed and out.remaining == 0
    out, _ = token_bucket(10, 1000, 3, 1000, tat)  # a full bucket again after idling
    assert out.allowed and out.remaining == 2


def test_memory_backend_never_admits_more_than_the_limit_in_any_fixed_window_and_exactly_it_under_demand():
    clock = Clock(0)
    backend = MemoryBackend(clock)
    scope = Scope("gateway", "g", 50, 1000)
    per_window: dict[int, int] = {}
    rng = random.Random(7)
    while clock.ms < 10_000:
        clock.ms += rng.uniform(0.5, 3.0)  # about 570 requests a second against 50
        if backend.check_now([scope])[0].allowed:
            per_window[int(clock.ms // 1000)] = per_window.get(int(clock.ms // 1000), 0) + 1
    assert max(per_window.values()) <= 50
    assert all(per_window[w] == 50 for w in range(1, 9)), per_window  # steady demand: the whole limit


def test_a_refused_request_counts_in_no_scope():
    clock = Clock(5_000)
    backend = MemoryBackend(clock)
    wide, narrow = Scope("gateway", "g", 10, 1000), Scope("user", "u", 1, 1000)
    assert all(o.allowed for o in backend.check_now([wide, narrow], "gw"))
    for _ in range(3):
        outcomes = backend.check_now([wide, narrow], "gw")
        assert outcomes[0].allowed and not outcomes[1].allowed
    assert backend.check_now([wide], peek=True)[0].used == 1  # only the admitted request
    assert backend.rejected == {("gw", "user"): 3}


def test_memory_backend_forgets_old_windows():
    clock = Clock(0)
    backend = MemoryBackend(clock)
    backend.check_now([Scope("gateway", "old", 5, 1000)])
    clock.ms = 60_000
    backend.check_now([Scope("gateway", "new", 5, 1000)])
    assert backend.keys() == ["new"]


def test_request_scopes_leave_out_unlimited_ones_and_apply_overrides():
    limits = Limits(global_limit=100, per_agent=0, per_user=10, window_ms=60_000)
    names = [s.name for s in request_scopes(limits, "g1", "bot", "key1", None, None)]
    assert names == ["gateway", "user"]
    scopes = request_scopes(limits, "g1", "bot", "key1", 5, 0)  # deployment override on, key override = unlimited
    assert [(s.name, s.limit) for s in scopes] == [("gateway", 100), ("agent", 5)]


def test_headers_name_the_tightest_scope_or_the_refusing_one():
    scopes = [Scope("gateway", "g", 100, 60_000), Scope("user", "u", 10, 60_000)]
    clock = Clock(0)
    backend = MemoryBackend(clock)
    headers = dict(headers_for(scopes, backend.check_now(scopes)))
    assert headers[b"x-ratelimit-limit"] == b"10" and headers[b"x-ratelimit-remaining"] == b"9"
    assert headers[b"ratelimit-policy"] == b'"gateway";q=100;w=60, "user";q=10;w=60'
    assert headers[b"ratelimit"] == b'"user";r=9;t=60' and b"retry-after" not in headers
    for _ in range(9):
        backend.check_now(scopes)
    refused = dict(headers_for(scopes, backend.check_now(scopes)))
    assert refused[b"x-ratelimit-remaining"] == b"0" and refused[b"retry-after"] == refused[b"x-ratelimit-reset"]
    assert refused[b"ratelimit"].startswith(b'"user";r=0;t=')


@pytest.mark.parametrize("limits", [Limits(global_limit=9, per_agent=7, per_user=4, window_ms=1000),
                                    # the largest limits and window a gateway takes (C numbers when compiled)
                                    Limits(global_limit=10**9, per_agent=10**9, per_user=4, window_ms=86_400_000)])
def test_the_router_s_short_path_decides_counts_and_answers_exactly_as_the_general_one(limits):
    """RateLimiter.check_local takes MemoryBackend.admit_sliding when every sliding window admits; a twin
    limiter decides the same requests by check_now() and headers_for(): same headers, same refusals, same
    counts, over random traffic of three callers across window edges."""
    from ngm.dataplane.limits.limiter import RateLimited, RateLimiter, _verdict, header_lines

    class Caller:
        def __init__(self, key_id, rate_limit=None):
            self.key_id, self.rate_limit = key_id, rate_limit

    rng = random.Random(7)
    clock = Clock(1_000_000)
    short, general = RateLimiter(clock=clock), RateLimiter(clock=clock)
    callers = [Caller("k1"), Caller("k2"), Caller("k3", rate_limit=2)]
    took_short = 0
    for _ in range(3000):
        clock.ms += rng.choice((0, 0, 1, 7, 40, 130, 499, 1000)) * limits.window_ms // 1000
        caller = rng.choice(callers)
        scopes, policy, *_ = general._request_scopes(caller, limits, "gw", "bot", None)
        try:
            expected = header_lines(_verdict(scopes, general.local.check_now(scopes, "gw"), policy))
        except RateLimited as refused:
            expected = ("refused", refused.status, refused.message, refused.details, refused.headers)
        try:
            got = short.check_local(caller, limits, "gw", "bot", None)
            took_short += 1
        except RateLimited as refused:
            got = ("refused", refused.status, refused.message, refused.details, refused.headers)
        assert got == expected
        assert short.local._windows == general.local._windows
    assert short.local.rejected == general.local.rejected
    refusals = sum(general.local.rejected.values())
    assert refusals > 300 and took_short > 1000  # both paths were exercised
