import pytest

from ngm.nodes.health.state import HealthPolicy, HealthState, admin_status, step

POLICY = HealthPolicy(healthy_threshold=2, unhealthy_threshold=3, degraded_latency_ms=100)


def run(events, state=None, policy=POLICY, **kw):
    """events: 'o' ok fast, 's' ok slow, 'w' ok with unhealthy workflows, 'x' failure. Returns statuses."""
    out, state = [], state or HealthState()
    for e in events:
        state = step(state, policy, e != "x", 500 if e == "s" else 10, impaired=e == "w", **kw)
        out.append(state.health_status)
    return out, state


def test_unknown_becomes_healthy_after_the_threshold_not_before():
    assert run("oo")[0] == ["unknown", "healthy"]


def test_unhealthy_after_exactly_the_failure_threshold():
    statuses, state = run("oo" + "xxx")
    assert statuses == ["unknown", "healthy", "healthy", "healthy", "unhealthy"]
    assert state.failures == 3 and state.successes == 0


def test_one_success_between_failures_resets_the_count():
    assert run("ooxxoxx")[0][-1] == "healthy"


def test_recovery_needs_consecutive_successes():
    statuses, _ = run("xxx" + "oxoo")
    assert statuses == ["unknown", "unknown", "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy"]


def test_flapping_never_settles_into_a_new_state():
    statuses, _ = run("oo" + "xoxoxoxo")
    assert set(statuses[1:]) == {"healthy"}


def test_one_slow_answer_does_not_degrade_but_a_run_does():
    statuses, _ = run("oo" + "s" + "o" + "ss" + "o" + "oo")
    assert statuses == ["unknown", "healthy", "healthy", "healthy", "healthy", "degraded", "degraded", "healthy",
                        "healthy"]


def test_unhealthy_workflows_count_as_degraded():
    assert run("ww")[0] == ["unknown", "degraded"]


def test_coming_up_slow_is_degraded():
    assert run("xxx" + "ss")[0][-1] == "degraded"


def test_grace_period_counts_failures_without_turning_unhealthy():
    statuses, state = run("xxxx", in_grace=True)
    assert statuses == ["unknown"] * 4 and state.failures == 4
    after = step(state, POLICY, False, 0, in_grace=False)
    assert after.health_status == "unhealthy"


@pytest.mark.parametrize("status, health, expected", [
    ("active", "unhealthy", "error"), ("error", "healthy", "active"), ("error", "degraded", "active"),
    ("error", "unhealthy", "error"), ("active", "degraded", "active"), ("inactive", "unhealthy", "inactive"),
    ("provisioning", "unhealthy", "provisioning"), ("inactive", "healthy", "inactive"),
    ("error", "unknown", "error"),
])
def test_admin_status_follows_health(status, health, expected):
    assert admin_status(status, health) == expected


def test_state_round_trips_through_gateway_columns():
    state = HealthState("degraded", 4, 0, 2, 0)
    assert HealthState.of(state.columns()) == state
