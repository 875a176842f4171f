from datetime import timedelta

import pytest

from ngm.nodes.health.stats import parse_window, percentile, summarize


@pytest.mark.parametrize("text, expected", [("1m", timedelta(minutes=1)), ("90s", timedelta(seconds=90)),
                                            ("24h", timedelta(hours=24)), ("30d", timedelta(days=30))])
def test_windows(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "10x", "59s", "31d", "-1h", "1.5h"])
def test_bad_windows(text):
    with pytest.raises(ValueError):
        parse_window(text)


def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_summary_counts_failures_in_uptime_but_not_in_latency():
    samples = [(True, 10.0), (True, 20.0), (False, 5000.0), (True, 30.0)]
    assert summarize(samples) == {"probes": 4, "successes": 3, "uptime_percent": 75.0,
                                  "latency_ms": {"p50": 20.0, "p95": 30.0, "p99": 30.0, "max": 30.0}}


def test_empty_window():
    assert summarize([]) == {"probes": 0, "successes": 0, "uptime_percent": None,
                             "latency_ms": {"p50": None, "p95": None, "p99": None, "max": None}}
