"""Fallbacks that must not be silent: each switch to (and back from) a degraded mode is logged once, counted,
and shown by /readyz with what it degrades."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("ngm.fallbacks")


class Fallback:
    def __init__(self, name: str, degraded: str):
        self.name = name
        self.degraded = degraded  # what is degraded while engaged, said to operators
        self.engaged = False
        self.since: float | None = None
        self.switches = 0
        self.reason: str | None = None

    def engage(self, reason: str) -> None:
        if not self.engaged:
            self.engaged, self.since, self.reason = True, time.monotonic(), reason
            self.switches += 1
            log.warning("%s: %s (%s)", self.name, self.degraded, reason)

    def clear(self) -> None:
        if self.engaged:
            log.warning("%s: recovered after %.1f s", self.name, time.monotonic() - (self.since or 0))
            self.engaged, self.since, self.reason = False, None, None

    def status(self) -> dict:
        out: dict = {"state": "degraded" if self.engaged else "ok", "switches": self.switches}
        if self.engaged and self.since is not None:
            out.update(degraded=self.degraded, reason=self.reason, seconds=round(time.monotonic() - self.since, 1))
        return out
