"""Leases of quota from Redis: an instance that a sliding window's scope keeps busy takes a few units of its
quota at once, counted in Redis as it takes them, and admits that many of its next requests there without a
round trip. One round trip per request (one script call per loop turn) had cost the router about 30% of its
throughput (bench/router_throughput.py), most of it in writing to and waking Redis.

The instances together still never admit more than the limit: units are counted in Redis before they are
handed out. Nor do leases keep requests out that the limit has room for, beyond a moment:
- a lease takes at most 1/(LEASE_SHARE x live instances) of what is left of the scope, and none is granted when
  that is below LEASE_MIN, so near the limit every request is decided in Redis on its own;
- it is asked for only by an instance that saw at least LEASE_MIN requests of the scope in LEASE_SECONDS, and
  is sized to what it saw: units taken are soon used;
- it is used for at most LEASE_SECONDS and only within the window it was counted in; what is left then is given
  back (subtracted from that window's count).
Token buckets, whose burst is a matter of timing, are decided per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ngm.dataplane.memo import keep

LEASE_SECONDS = 0.1  # a lease's longest life, and the span over which demand is measured
LEASE_MIN = 16  # the smallest lease worth a round trip, and the least demand that asks for one
LEASE_SHARE = 4  # a lease takes at most a quarter of an instance's share of what is left
_KEPT = 100_000  # scopes whose leases and demand are kept


class Held:
    """One scope's lease on this instance, and its demand here."""

    __slots__ = ("units", "next_remaining", "until", "window_end", "limit", "index", "serial", "slot", "count",
                 "last", "asking", "quiet_until")

    def __init__(self) -> None:
        self.units = 0  # left to hand out
        self.next_remaining = 0  # what the next unit's request is told remains of the scope
        self.until = 0.0  # monotonic: the lease is used before this (its life, and the window's end)
        self.window_end = 0.0  # monotonic: when the window it was counted in ends (the requests' reset)
        self.limit = 0  # the scope's limit when it was granted (a changed limit does not use it)
        self.index = 0  # the window it was counted in (Redis's), where what is left is given back
        self.serial = 0  # which lease this is (an expiry timer acts only on its own)
        self.slot = 0  # demand: requests counted in LEASE_SECONDS slot `slot`,
        self.count = 0
        self.last = 0  # ...and in the slot before it
        self.asking = False  # a request asking for a lease is on its way
        self.quiet_until = 0.0  # none granted last time: ask again after this


class Leases:
    def __init__(self, give_back: Callable[[str, int, int], None]) -> None:
        self.give_back = give_back  # give_back(scope key, window index, units): subtract unused units in Redis
        self.share = LEASE_SHARE  # LEASE_SHARE x live instances (RateLimiter keeps it current)
        self.held: dict[str, Held] = {}
        self.granted = 0  # leases
        self.given_back = 0  # units

    def admit(self, keys: tuple[str, ...], limits: tuple[int, ...]) -> tuple[int, int, int] | None:
        """A request whose scopes (sliding windows) all hold a lease: one unit of each taken, and (index of the
        tightest scope, its remaining, ms until its window ends), as from Redis. None: it goes to Redis. Either
        way it counts in each scope's demand."""
        now = time.monotonic()
        slot = int(now / LEASE_SECONDS)
        covered = True
        found = []
        for i in range(len(keys)):
            h = self.held.get(keys[i])
            if h is None:
                h = keep(self.held, keys[i], Held(), _KEPT)
            if h.slot != slot:
                h.last = h.count if h.slot == slot - 1 else 0
                h.slot, h.count = slot, 0
            h.count += 1
            if h.units <= 0 or now >= h.until or h.limit != limits[i]:
                covered = False
            found.append(h)
        if not covered:
            return None
        tightest, least, reset = 0, -1, 0.0
        for i in range(len(found)):
            h = found[i]
            h.units -= 1
            left = h.next_remaining
            if left > 0:
                h.next_remaining = left - 1
            else:
                left = 0
            if least < 0 or left < least or (left == least and h.window_end - now > reset):
                tightest, least, reset = i, left, h.window_end - now
        reset_ms = int(reset * 1000)
        return tightest, least, reset_ms if reset_ms > 0 else 1

    def wishes(self, keys: tuple[str, ...]) -> tuple[int, ...] | None:
        """For a request admit() sent to Redis: the units to ask for in each scope (its demand here over the last
        LEASE_SECONDS; 0 for none), or None when no scope asks. A scope asks once at a time."""
        now = time.monotonic()
        wanted = []
        asks = False
        for key in keys:
            h = self.held.get(key)
            wish = 0
            if h is not None and not h.asking and now >= h.quiet_until and (h.units <= 0 or now >= h.until):
                wish = h.count if h.count > h.last else h.last
                if wish >= LEASE_MIN:
                    h.asking = asks = True
                else:
                    wish = 0
            wanted.append(wish)
        return tuple(wanted) if asks else None

    def granted_in(self, keys: tuple[str, ...], limits: tuple[int, ...], wishes: tuple[int, ...],
                   grants: list[int] | None, sent_at: float) -> None:
        """Redis's answer to wishes(): four numbers per scope (units granted, the request's remaining there, the
        window's index, ms until it ends), or None when the request failed or was refused."""
        now = time.monotonic()
        for i in range(len(keys)):
            if not wishes[i]:
                continue
            h = self.held.get(keys[i])
            if h is None:  # forgotten meanwhile (the memo started over): a Held of its own to give back from
                h = keep(self.held, keys[i], Held(), _KEPT)
            h.asking = False
            units = grants[i * 4] if grants is not None else 0
            if units <= 0:
                h.quiet_until = now + LEASE_SECONDS
                continue
            assert grants is not None  # units > 0 came from it
            if h.units > 0:  # an expired lease whose timer has not run yet
                self._return(keys[i], h)
            h.units, h.next_remaining, h.index = units, grants[i * 4 + 1] - 1, grants[i * 4 + 2]
            h.limit = limits[i]
            h.window_end = sent_at + grants[i * 4 + 3] / 1000  # counted from before Redis decided: never late
            h.until = min(sent_at + LEASE_SECONDS, h.window_end)
            h.serial += 1
            self.granted += 1
            asyncio.get_running_loop().call_later(h.until - now, self._expire, keys[i], h, h.serial)

    def release_all(self) -> None:
        """Every lease's unused units given back (the instance stops: they would count until the window ends)."""
        for key, h in list(self.held.items()):
            if h.units > 0:
                self._return(key, h)

    def _expire(self, key: str, h: Held, serial: int) -> None:
        if h.serial == serial and h.units > 0:
            self._return(key, h)

    def _return(self, key: str, h: Held) -> None:
        units, h.units = h.units, 0
        self.given_back += units
        self.give_back(key, h.index, units)
