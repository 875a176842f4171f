"""Turn DataFlow rows into one canonical shape whatever the backend.

SQLite returns booleans as 0/1 and datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]'; PostgreSQL returns
real booleans and 'YYYY-MM-DDTHH:MM:SS[.ffffff]'. Both are naive UTC here; we render ISO 8601 with Z.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timezone

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DATAFLOW_EXTRAS = ("found", "rows_affected", "updated", "filter", "fields", "conditions", "updates")


def new_id() -> str:
    return uuid.uuid4().hex


def new_ordered_id() -> str:
    """Sorts by creation time (microseconds, then 48 random bits): for records listed newest first,
    where DataFlow's created_at has only one-second resolution on SQLite."""
    return f"{time.time_ns() // 1000:014x}{uuid.uuid4().hex[:12]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace(" ", "T").removesuffix("Z"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def parse_time(value) -> datetime | None:
    """Naive UTC datetime from a datetime (aware or naive) or an ISO string."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def normalize(row: dict | None, *, bools=(), times=()) -> dict | None:
    if row is None:
        return None
    out = {k: v for k, v in row.items() if k not in _DATAFLOW_EXTRAS}
    for key in bools:
        if key in out and out[key] is not None:
            out[key] = bool(out[key])
    for key in ("created_at", "updated_at", *times):
        if key in out:
            out[key] = iso(out[key])
    return out


def is_unique_violation(exc: BaseException) -> bool:
    text = str(exc)
    return "UNIQUE constraint failed" in text or "duplicate key value violates unique constraint" in text


def clean_error(exc: BaseException) -> str:
    """DataFlow error text without ANSI colours, first line only (for logs, never for callers)."""
    return _ANSI.sub("", str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
