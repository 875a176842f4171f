"""Keeping long-lived objects out of the garbage collector's full passes.

A full (generation 2) pass visits every tracked object: with 100,000 gateways' rows and routing entries that was
100-220 ms with the event loop held (seen as /healthz stalls while the table was re-read). `ngm serve` freezes
what it built at start; the routing table and the monitor call freeze_long_lived() after each full re-read, so
what they hold for the next minutes is frozen too. Frozen objects are still freed when their last reference goes
(the old snapshot is); only a reference cycle frozen while garbage would stay, so the young generations are
collected first.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    gc.collect(1)  # young cycles: cheap, and not frozen as garbage
    gc.freeze()
