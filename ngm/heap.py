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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SLICE = 500  # rows merged between two turns of the event loop (a few ms)


def freeze_long_lived() -> None:
    gc.collect(1)  # young cycles: cheap, and not frozen as garbage
    gc.freeze()


_deferring = 0  # builders inside deferred_full_collections now
_saved = gc.get_threshold()


@contextmanager
def deferred_full_collections() -> Iterator[None]:
    """No full pass while a large structure is built (with a frozen heap the collector starts one after a few
    hundred thousand new objects, and each visits every object built so far: 100-200 ms at 100,000 gateways).
    Young generations are still collected; the full pass comes after, over whatever was not frozen meanwhile."""
    global _deferring, _saved
    if _deferring == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], 1_000_000_000)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _deferring == 0:
            gc.set_threshold(*_saved)


async def release(*containers: dict[Any, Any], budget: float = 0.002) -> None:
    """Empty these dicts, serving the loop every `budget` seconds: what only they hold is freed a little at a time
    (the previous routing snapshot of 100,000 gateways took 260 ms to free, its targets lists most of it: an entry
    may hold many objects, so the slices are timed rather than counted)."""
    for container in containers:
        while container:
            deadline = time.perf_counter() + budget
            while True:  # a hundred entries at least per turn of the loop
                for _ in range(min(100, len(container))):
                    container.popitem()
                if not container or time.perf_counter() >= deadline:
                    break
            await asyncio.sleep(0)
