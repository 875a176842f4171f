"""Webhook signatures: `X-NGM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

The timestamp is inside the signed text, so a receiver that rejects old timestamps (5 minutes by default)
stops replays; verify() is what a Python receiver needs.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets

TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_SECONDS) -> bool:
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 600.0, rng=random.random) -> float:
    """Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped, with ±20% jitter."""
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay * (0.8 + 0.4 * rng())
