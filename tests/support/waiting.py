"""Polling for a condition in end-to-end tests, with a message that says what never happened."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """The predicate's first truthy value within `timeout` seconds, else AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def room_in_window(window: float, room: float) -> None:
    """Return while at least `room` seconds are left in the current fixed `window`-second window (they start
    at multiples of the window since the epoch, as the limiter's do), else sleep into the next one. The
    sliding-window counter weighs the previous window's count by how much of it still overlaps, so a
    request just after a boundary is admitted where one just before it was refused (3 used of 3 count as
    2.99); requests whose counts a test asserts must not straddle a boundary."""
    now = time.time()
    left = window - now % window
    if left < room:
        time.sleep(left + 0.05)
