import random
from collections import Counter
from types import SimpleNamespace

import pytest

from ngm.dataplane.circuit import CircuitBreakers
from ngm.dataplane.inflight import InFlight
from ngm.dataplane.router import Refusal, Router, _Forwarding
from ngm.dataplane.strategies import Candidate, Policy, RoutingState, SmoothWeighted, choose, rendezvous
from ngm.dataplane.table import GatewayRoute, Target
from ngm.nodes.routing.nodes import strategy_nodes


def cand(dep, weight=100, region="eu", **kw):
    return Candidate(dep, "gw-" + dep, "gateway " + dep, "v1", weight, region, **kw)


def route(policy, candidates, n, state=None, **kw):
    state = state or RoutingState()
    return [choose(policy, candidates, state, **kw).chosen.deployment_id for _ in range(n)]


def test_weighted_90_10_is_exact_over_10000_and_in_every_window_of_10():
    picks = route(Policy("weighted"), [cand("a", 90), cand("b", 10)], 10_000)
    assert Counter(picks) == {"a": 9000, "b": 1000}
    for start in range(0, 10_000 - 10):  # every window, sliding
        assert picks[start:start + 10].count("b") == 1


def test_weighted_is_smooth_not_bursty():
    picks = route(Policy("weighted"), [cand("a", 5), cand("b", 1), cand("c", 1)], 7)
    assert Counter(picks) == {"a": 5, "b": 1, "c": 1} and picks != ["a"] * 5 + ["b", "c"]


def test_weighted_adapts_when_a_deployment_leaves_and_returns():
    state, a, b, c = RoutingState(), cand("a", 1), cand("b", 1), cand("c", 2)
    assert Counter(route(Policy(), [a, b, c], 400, state)) == {"a": 100, "b": 100, "c": 200}
    assert Counter(route(Policy(), [a, c], 300, state)) == {"a": 100, "c": 200}
    assert Counter(route(Policy(), [a, b, c], 400, state)) == {"a": 100, "b": 100, "c": 200}


def test_peeking_does_not_move_the_sequence():
    state, cands = RoutingState(), [cand("a", 3), cand("b", 1)]
    live = route(Policy(), cands, 4, state)
    peeks = [choose(Policy(), cands, state, commit=False).chosen.deployment_id for _ in range(5)]
    assert len(set(peeks)) == 1 and route(Policy(), cands, 4, state) == live


def test_round_robin_ignores_weights():
    assert Counter(route(Policy("round_robin"), [cand("a", 90), cand("b", 10), cand("c", 1)], 300)) == {
        "a": 100, "b": 100, "c": 100}


def test_least_connections_prefers_the_least_loaded_per_weight():
    cands = [cand("a", 100, in_flight=4), cand("b", 100, in_flight=1), cand("c", 300, in_flight=4)]
    decision = choose(Policy("least_connections"), cands, RoutingState())
    assert decision.chosen.deployment_id == "b"  # 1/100 < 4/300 < 4/100
    cands[1].in_flight = 5
    assert choose(Policy("least_connections"), cands, RoutingState()).chosen.deployment_id == "c"


def test_least_connections_spreads_ties():
    assert Counter(route(Policy("least_connections"), [cand("a"), cand("b")], 10)) == {"a": 5, "b": 5}


@pytest.mark.parametrize("candidate, reason", [
    (cand("x", status="draining"), "deployment draining"), (cand("x", status="inactive"), "deployment inactive"),
    (cand("x", 0), "weight 0"), (cand("x", gateway_status="error"), "gateway in error"),
    (cand("x", gateway_status="inactive"), "gateway inactive"),
    (cand("x", gateway_status="provisioning"), "gateway provisioning"),
    (cand("x", health_status="unhealthy"), "gateway unhealthy"), (cand("x", circuit="open"), "circuit open"),
])
def test_ineligible_deployments_are_skipped_with_a_reason(candidate, reason):
    decision = choose(Policy(), [candidate, cand("ok")], RoutingState())
    assert decision.chosen.deployment_id == "ok"
    assert decision.skipped[0][1].startswith(reason)


def test_nothing_eligible_means_no_choice_never_a_dead_gateway():
    decision = choose(Policy(), [cand("a", health_status="unhealthy"), cand("b", 0)], RoutingState())
    assert decision.chosen is None and decision.reason == "no eligible deployment"
    assert [why for _, why in decision.skipped] == ["gateway unhealthy", "weight 0"]


def test_degraded_and_unknown_health_still_serve():
    decision = choose(Policy(), [cand("a", health_status="degraded"), cand("b", health_status="unknown")],
                      RoutingState())
    assert decision.chosen is not None and not decision.skipped


def test_excluded_deployments_are_skipped_on_retry():
    decision = choose(Policy(), [cand("a"), cand("b")], RoutingState(), exclude=frozenset({"a"}))
    assert decision.chosen.deployment_id == "b" and decision.skipped[0][1] == "failed on this request"


def test_geographic_prefers_the_callers_region_and_falls_back():
    cands = [cand("eu1", region="eu"), cand("us1", region="us"), cand("ap1", region="ap")]
    policy = Policy("geographic", fallback_regions=["ap"])
    assert set(route(policy, cands, 10, region="us")) == {"us1"}
    cands[1].health_status = "unhealthy"
    decision = choose(policy, cands, RoutingState(), region="us")
    assert decision.chosen.deployment_id == "ap1" and decision.region_used == "ap" and "fallback" in decision.reason
    assert set(route(Policy("geographic"), cands, 10, region="us")) == {"eu1", "ap1"}
    strict = choose(Policy("geographic", fallback="none"), cands, RoutingState(), region="us")
    assert strict.chosen is None and "fallback is none" in strict.reason


def test_geographic_without_a_region_uses_every_region_weighted():
    picks = route(Policy("geographic"), [cand("eu1", 3, region="eu"), cand("us1", 1, region="us")], 400)
    assert Counter(picks) == {"eu1": 300, "us1": 100}


def test_sticky_keys_stay_put_and_follow_the_weights():
    cands = [cand("a", 90), cand("b", 10)]
    policy = Policy("weighted", sticky=True)
    state = RoutingState()
    users = [f"user-{i}" for i in range(10_000)]
    first = {u: choose(policy, cands, state, routing_key=u, key_source="header").chosen.deployment_id for u in users}
    again = {u: choose(policy, cands, state, routing_key=u, key_source="header").chosen.deployment_id for u in users}
    assert first == again
    share = Counter(first.values())["b"] / len(users)
    assert 0.09 <= share <= 0.11


def test_a_weight_change_moves_only_the_keys_it_must():
    users = [f"user-{i}" for i in range(10_000)]
    before = {u: rendezvous([cand("a", 90), cand("b", 10)], u).deployment_id for u in users}
    after = {u: rendezvous([cand("a", 80), cand("b", 20)], u).deployment_id for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert all(before[u] == "a" and after[u] == "b" for u in moved)  # nobody leaves b
    assert 0.08 <= len(moved) / len(users) <= 0.12


def test_sticky_users_move_only_when_their_deployment_becomes_ineligible():
    cands = [cand("a"), cand("b"), cand("c")]
    policy = Policy("weighted", sticky=True)
    home = {u: choose(policy, cands, RoutingState(), routing_key=u).chosen.deployment_id for u in map(str, range(300))}
    cands[0].health_status = "unhealthy"
    moved = {u: choose(policy, cands, RoutingState(), routing_key=u).chosen.deployment_id for u in home}
    assert all(moved[u] == home[u] for u in home if home[u] != "a")
    assert all(moved[u] != "a" for u in home)


def test_explanation_lists_candidates_shares_and_skips():
    decision = choose(Policy(), [cand("a", 90), cand("b", 10), cand("c", 50, status="draining")], RoutingState())
    view = decision.view()
    assert view["deployment"]["deployment_id"] == "a" and view["strategy"] == "weighted"
    assert [(c["deployment_id"], c["share_percent"]) for c in view["candidates"]] == [("a", 90.0), ("b", 10.0)]
    assert view["skipped"][0]["reason"] == "deployment draining"


def test_smooth_weighted_reduces_by_gcd():
    sw = SmoothWeighted()
    assert [sw.pick([cand("a", 900), cand("b", 100)]).deployment_id for _ in range(10)].count("b") == 1


def test_the_routers_quick_pick_makes_the_general_paths_choice_at_every_step():
    """Router._choose picks on the routing table's Targets (pick_target) where it can: over a random run of
    requests, table changes and gateway failures, it chooses what decide() chooses, with its own state."""
    rng = random.Random(11)
    policies = [Policy("weighted"), Policy("round_robin"), Policy("weighted", sticky=True),
                Policy("round_robin", sticky=True), Policy("least_connections"), Policy("geographic")]
    gateways = [GatewayRoute(f"g{i}", "org", f"gw {i}", "production", rng.choice(["eu", "us"]), "active", "healthy",
                             "http", "127.0.0.1", 9000 + i, b"", b"h", None, 1.0) for i in range(4)]
    targets = [Target(f"d{i}", "v1", rng.randint(1, 5), "active", gateways[i % 4], agent_id="bot") for i in range(6)]
    scope = ("org", "bot", "production")
    table = SimpleNamespace(targets={scope: targets}, policies={}, policy=lambda s: table.policies[s])
    clock = [0.0]

    def router():
        return Router(table, None, CircuitBreakers(threshold=2, cool_down=5, clock=lambda: clock[0]), None,
                      InFlight(), strategy_nodes())

    quick, general = router(), router()
    picked_quickly = 0
    for step in range(20_000):
        change = rng.random()
        if change < 0.02:
            rng.choice(targets).status = rng.choice(["active", "active", "draining", "inactive"])
        elif change < 0.04:
            rng.choice(targets).weight = rng.choice([0, 1, 2, 3, 5, 10])
        elif change < 0.05:
            g = rng.choice(gateways)
            g.status, g.health_status = rng.choice(["active", "active", "error"]), rng.choice(["healthy", "unhealthy"])
        elif change < 0.07:
            failed = rng.choice(gateways).id
            for r in (quick, general):
                r.breakers.failure(failed)
        elif change < 0.08:
            clock[0] += 3
        if step % 500 == 0:
            table.policies[scope] = rng.choice(policies)
        policy, key = table.policies[scope], rng.choice(["alice", "bob", "carol"])
        expected = general.decide(*scope, routing_key=key, key_source="api_key").chosen
        fw = _Forwarding(None, None, "")  # what the router's _prepare would make of a request
        fw.scope, fw.policy, fw.key, fw.key_source = scope, policy, key, "api_key"
        picked_quickly += quick.selectors[policy.strategy].pick(policy, targets, RoutingState(), quick.breakers.state,
                                                                key) is not None
        try:
            chosen = quick._choose(fw, frozenset())
        except Refusal as refusal:
            assert expected is None and refusal.status == 503
        else:
            assert expected is not None and chosen is expected.target, step
        answered = rng.random() < 0.5
        for r in (quick, general):  # the request went to its gateway: a half-open circuit's trial is on
            if expected is not None:
                r.breakers.admit(expected.gateway_id)
                if answered:
                    r.breakers.success(expected.gateway_id)
    assert picked_quickly > 4_000  # the quick pick was made, not only the general path


def test_smooth_weighted_with_one_candidate_keeps_the_state_the_algorithm_would():
    """nginx's smooth weighted round robin, written out plainly, against SmoothWeighted (which skips the work
    for one candidate) over random sets of candidates: the same picks and the same remembered values."""
    def plain(current: dict, candidates: list) -> str:
        total = sum(c.weight for c in candidates)
        for c in candidates:
            current[c.deployment_id] = current.get(c.deployment_id, 0) + c.weight
        best = max(candidates, key=lambda c: current[c.deployment_id])  # the first of equals, as pick()
        current[best.deployment_id] -= total
        for gone in set(current) - {c.deployment_id for c in candidates}:
            del current[gone]
        return best.deployment_id

    rng = random.Random(5)
    pool = [cand(name, weight) for name, weight in (("a", 5), ("b", 3), ("c", 2), ("d", 7))]
    sw, reference = SmoothWeighted(), {}
    for _ in range(5000):
        candidates = rng.sample(pool, rng.choice((1, 1, 2, 3, 4)))
        assert sw.pick(candidates).deployment_id == plain(reference, candidates)
        assert sw.current == reference
