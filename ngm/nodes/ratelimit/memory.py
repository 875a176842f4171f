"""In-memory backend: one instance (the embedded default), and every instance's fallback when Redis is down.

Atomic because it never awaits: all of a request's scopes are decided, then counted only if all allow.
"""

from __future__ import annotations

import time

from ngm.nodes.ratelimit.algorithms import SLIDING_WINDOW, Outcome, Scope, sliding_window, token_bucket


class MemoryBackend:
    def __init__(self, clock=time.time):
        self.clock = clock  # seconds
        self._windows: dict[str, tuple[int, int, int, int]] = {}  # key -> (window ms, index, current, previous)
        self._tats: dict[str, float] = {}
        self.rejected: dict[tuple[str, str], int] = {}  # (gateway or key id, scope name) -> refusals
        self._next_prune = 0.0

    async def check(self, scopes: list[Scope], counter: str = "", peek: bool = False) -> list[Outcome]:
        return self.check_now(scopes, counter, peek)

    def check_now(self, scopes: list[Scope], counter: str = "", peek: bool = False) -> list[Outcome]:
        now_ms = self.clock() * 1000
        now_int = int(now_ms)
        outcomes, commits = [], []
        allowed = True
        for s in scopes:
            if s.algorithm == SLIDING_WINDOW:
                current, previous = self._counts(s, now_int)
                outcome, index = sliding_window(s.limit, s.window_ms, now_int, current, previous)
                commits.append((True, s.key, (s.window_ms, index, current + 1, previous)))
            else:
                outcome, tat = token_bucket(s.limit, s.window_ms, s.burst, now_ms, self._tats.get(s.key))
                commits.append((False, s.key, tat))
            outcomes.append(outcome)
            allowed = allowed and outcome.allowed
        if peek:
            return [o.before() for o in outcomes]
        if allowed:
            for window, key, value in commits:
                if window:
                    self._windows[key] = value
                else:
                    self._tats[key] = value
        else:
            for s, o in zip(scopes, outcomes):
                if not o.allowed:
                    self.rejected[(counter, s.name)] = self.rejected.get((counter, s.name), 0) + 1
        if now_ms >= self._next_prune:
            self._prune(now_ms)
        return outcomes

    def _counts(self, s: Scope, now_ms: int) -> tuple[int, int]:
        """(this window's count, the previous window's) for the scope's key."""
        index = now_ms // s.window_ms
        window_ms, stored, current, previous = self._windows.get(s.key, (s.window_ms, index, 0, 0))
        if window_ms != s.window_ms or stored < index - 1:
            return 0, 0
        return (current, previous) if stored == index else (0, current)

    def _prune(self, now_ms: float) -> None:
        """Forget keys whose counts no longer weigh, and buckets that are full again."""
        self._next_prune = now_ms + 10_000
        self._windows = {k: w for k, w in self._windows.items() if (w[1] + 2) * w[0] > now_ms}
        self._tats = {k: t for k, t in self._tats.items() if t > now_ms}

    def keys(self) -> list[str]:
        return [*self._windows, *self._tats]

    async def rejections(self, counter: str) -> dict[str, int]:
        return {scope: n for (c, scope), n in self.rejected.items() if c == counter}
