from ngm.dataplane.circuit import CircuitBreakers
from ngm.dataplane.traffic import (
    TrafficStats,
    histogram_index,
    histogram_upper_ms,
    percentile_from_histogram,
    summarize,
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_circuit_opens_after_consecutive_failures_only():
    opened = []
    clock = Clock()
    cb = CircuitBreakers(threshold=3, cool_down=10, clock=clock, on_open=opened.append)
    for _ in range(2):
        cb.failure("g")
    cb.success("g")
    cb.failure("g")
    cb.failure("g")
    assert cb.state("g") == "closed" and opened == []
    cb.failure("g")
    assert cb.state("g") == "open" and opened == ["g"]


def test_half_open_lets_one_trial_through():
    clock = Clock()
    cb = CircuitBreakers(threshold=1, cool_down=10, clock=clock)
    cb.failure("g")
    clock.now += 9.9
    assert cb.state("g") == "open"
    clock.now += 0.2
    assert cb.state("g") == "half_open"
    cb.admit("g")
    assert cb.state("g") == "open"  # the trial is in flight: nobody else
    cb.failure("g")
    assert cb.state("g") == "open"
    clock.now += 10
    cb.admit("g")
    cb.success("g")
    assert cb.state("g") == "closed"


def test_a_failure_after_the_cool_down_reopens_whether_or_not_anyone_looked():
    """Its state depends on time and events, not on who asked: the router's quick pick looks at fewer
    gateways than the general path does."""
    seen, unseen = (CircuitBreakers(threshold=1, cool_down=10, clock=clock) for clock in [Clock()] * 2)
    clock = seen.clock
    for cb in (seen, unseen):
        cb.failure("g")
    clock.now += 10
    assert seen.state("g") == "half_open"
    for cb in (seen, unseen):
        cb.failure("g")  # a late answer of a request sent before the circuit opened
    clock.now += 9
    assert seen.state("g") == unseen.state("g") == "open"
    clock.now += 1
    assert seen.state("g") == unseen.state("g") == "half_open"


def test_a_successful_active_probe_half_opens_at_once():
    cb = CircuitBreakers(threshold=1, cool_down=60, clock=Clock())
    cb.failure("g")
    cb.probe_result("g", ok=False)
    assert cb.state("g") == "open"
    cb.probe_result("g", ok=True)
    assert cb.state("g") == "half_open"


def test_histogram_resolution():
    for ms in (0.05, 0.3, 1.0, 7.7, 250.0, 4999.0):
        assert histogram_upper_ms(histogram_index(ms)) >= ms
        if ms > 0.1:
            assert histogram_upper_ms(histogram_index(ms)) <= ms * 1.16


def test_percentiles_and_windows():
    clock = Clock()
    stats = TrafficStats(clock=clock)
    for i in range(100):
        stats.record("d1", latency_ms=float(i + 1), error=i >= 95)
    clock.now += 120
    stats.record("d1", latency_ms=1000.0, error=False)
    recent, everything = stats.window(["d1"], 60)["d1"], stats.window(["d1"], 300)["d1"]
    assert recent.requests == 1 and everything.requests == 101 and everything.errors == 5
    s = summarize(everything, 300)
    assert 50 <= s["latency_ms"]["p50"] <= 50 * 1.16 and 100 <= s["latency_ms"]["p99"] <= 100 * 1.16
    assert s["error_rate"] == round(5 / 101, 4)
    assert percentile_from_histogram({}, 50) is None


def test_unflushed_buckets_are_handed_over_once():
    stats = TrafficStats(clock=Clock())
    stats.record("d1", 5.0, False)
    stats.record_rejected("d1")
    taken = stats.take_unflushed()
    assert [(k[0], b.requests, b.rejected) for k, b in taken.items()] == [("d1", 1, 1)]
    assert stats.take_unflushed() == {}
    stats.record("d1", 5.0, True)  # after a hand-over, counts go to the new unflushed buckets
    [(key, bucket)] = stats.take_unflushed().items()
    assert key[0] == "d1" and (bucket.requests, bucket.errors) == (1, 1)
    assert stats.window(["d1"], 60)["d1"].requests == 2
