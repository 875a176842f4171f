"""Keeping long-lived objects out of the garbage collector's full passes, and letting go of many at once in slices.

A full (generation 2) pass visits every tracked object: with 100,000 gateways' rows and routing entries that was
100-220 ms with the event loop held (seen as /healthz stalls while the table was re-read). `ngm serve` freezes
what it built at start; the routing table and the monitor call freeze_long_lived() after each full re-read, so
what they hold for the next minutes is frozen too. Frozen objects are still freed when their last reference goes
(the old snapshot is); only a reference cycle frozen while garbage would stay, so the young generations are
collected first.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

SLICE = 2000  # objects handled between two turns of the event loop (~1-3 ms)


def freeze_long_lived() -> None:
    gc.collect(1)  # young cycles: cheap, and not frozen as garbage
    gc.freeze()


async def release(*containers: dict[Any, Any]) -> None:
    """Empty these dicts SLICE entries at a time, serving the loop in between: what only they hold is freed
    a slice at a time (the previous routing snapshot of 100,000 gateways took 167 ms to free at once)."""
    for container in containers:
        while container:
            for _ in range(min(SLICE, len(container))):
                container.popitem()
            await asyncio.sleep(0)
