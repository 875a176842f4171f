"""Passive health per gateway: consecutive 5xx answers or connection failures open its circuit.

closed -> open after `threshold` consecutive failures; open -> half_open after `cool_down` seconds, or
at once when an active health probe of the gateway succeeds (the monitor's view); half_open lets one
request through: success closes, failure opens again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Circuit:
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False


class CircuitBreakers:
    def __init__(self, threshold: int = 5, cool_down: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 on_open: Callable[[str], object] | None = None) -> None:
        self.threshold, self.cool_down, self.clock = threshold, cool_down, clock
        self.on_open = on_open  # callback(gateway_id): ask the monitor to probe it now
        self._circuits: dict[str, Circuit] = {}

    def _cool(self, c: Circuit) -> None:
        """An open circuit whose cool-down has passed is half-open, whether or not anyone has looked since."""
        if c.state == "open" and self.clock() - c.opened_at >= self.cool_down:
            c.state = "half_open"

    def state(self, gateway_id: str) -> str:
        c = self._circuits.get(gateway_id)
        if c is None:
            return "closed"
        self._cool(c)
        if c.state == "half_open" and c.trial_in_flight:
            return "open"  # one trial at a time
        return c.state

    def admit(self, gateway_id: str) -> None:
        """A request is about to go to this gateway (after state() said it may)."""
        c = self._circuits.get(gateway_id)
        if c is not None and c.state == "half_open":
            c.trial_in_flight = True

    def success(self, gateway_id: str) -> None:
        c = self._circuits.get(gateway_id)
        if c is not None:
            c.state, c.failures, c.trial_in_flight = "closed", 0, False

    def failure(self, gateway_id: str) -> None:
        c = self._circuits.setdefault(gateway_id, Circuit())
        self._cool(c)
        c.failures += 1
        c.trial_in_flight = False
        if c.state == "half_open" or (c.state == "closed" and c.failures >= self.threshold):
            c.state, c.opened_at = "open", self.clock()
            if self.on_open is not None:
                self.on_open(gateway_id)

    def probe_result(self, gateway_id: str, ok: bool) -> None:
        """The monitor probed the gateway: a success lets traffic test it again."""
        c = self._circuits.get(gateway_id)
        if c is not None and ok and c.state == "open":
            c.state = "half_open"

    def view(self) -> dict[str, str]:
        return {gid: self.state(gid) for gid in self._circuits if self.state(gid) != "closed"}
