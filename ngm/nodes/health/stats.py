"""Uptime and latency percentiles over a window of probes (pure)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_WINDOW = re.compile(r"^([0-9]{1,12})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = timedelta(days=30)


def parse_window(text: str) -> timedelta:
    """'30m', '1h', '24h', '7d' -> timedelta; between 1 minute and 30 days."""
    match = _WINDOW.fullmatch(text or "")
    if not match:
        raise ValueError("must be a number and a unit s, m, h or d, e.g. 1h or 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 60 <= seconds <= MAX_WINDOW.total_seconds():  # compared as a number: no timedelta overflow
        raise ValueError("must be between 1m and 30d")
    return timedelta(seconds=seconds)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: list[tuple[bool, float]]) -> dict:
    """samples: (ok, response_time_ms) per probe. Latency percentiles count successful probes only."""
    latencies = sorted(ms for ok, ms in samples if ok)
    total = len(samples)
    return {
        "probes": total,
        "successes": len(latencies),
        "uptime_percent": round(100.0 * len(latencies) / total, 2) if total else None,
        "latency_ms": {name: (round(v, 2) if (v := percentile(latencies, q)) is not None else None)
                       for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
    }
