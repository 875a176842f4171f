"""The log's UTC timestamps: cached per second and per millisecond, never stale when time moves either way."""

from __future__ import annotations

import random
import time

from ngm.dataplane.access_log import utc_stamp


def plain(created: float) -> str:
    ms = int(created * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_stamps_match_the_plain_format_in_any_order():
    rng = random.Random(5)
    base = 1_790_000_000.0
    times = [base + rng.choice([0, 0.0004, 0.9995, 1.0, 59.9999, 86_400.5]) + rng.random() / 1000
             for _ in range(2_000)]
    times += [base + 0.5, base + 0.5, base + 0.2, base - 3600]  # repeats, and the clock read going back
    for t in times:
        assert utc_stamp(t) == plain(t), t
    assert utc_stamp(0.0) == "1970-01-01T00:00:00.000Z"
