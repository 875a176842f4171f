"""Memos on the request path: what was worked out for one key is kept for the next request with it."""

from __future__ import annotations


def keep(memo: dict, key, value, limit: int):
    """memo[key] = value, returned; a memo that would pass `limit` entries starts over rather than grow (a
    flood of distinct keys costs recomputation, never memory)."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
