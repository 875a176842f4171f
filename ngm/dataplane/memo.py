"""Memos on the request path: what was worked out for one key is kept for the next request with it."""

from __future__ import annotations

from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


def keep(memo: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    """memo[key] = value, returned; a memo that would pass `limit` entries starts over rather than grow (a
    flood of distinct keys costs recomputation, never memory)."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
