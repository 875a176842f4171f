"""Ids and times of rows: ids we generate (DataFlow never generates string ids), times stored as naive UTC
and shown as ISO 8601 with Z."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone


def new_id() -> str:
    return uuid.uuid4().hex


def new_ordered_id() -> str:
    """Sorts by creation time (microseconds, then 48 random bits): for records listed newest first,
    where DataFlow's created_at has only one-second resolution on SQLite."""
    return f"{time.time_ns() // 1000:014x}{uuid.uuid4().hex[:12]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace(" ", "T").removesuffix("Z"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def parse_time(value: datetime | str | None) -> datetime | None:
    """Naive UTC datetime from a datetime (aware or naive) or an ISO string."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
