"""What an audit event says changed, without secret values."""

from __future__ import annotations

from typing import Any

SECRET_FIELDS = {"api_key_encrypted": "api_key", "api_key_last4": None}
_IGNORED = {"id", "organization_id", "created_at", "updated_at"}


def _secret_change(before, after) -> str:
    if before and after:
        return "[changed]"
    return "[set]" if after else "[cleared]"


def diff(before: dict | None, after: dict | None) -> dict:
    """{field: {"from": old, "to": new}} for fields that differ; secrets reduced to [set]/[changed]/[cleared]."""
    before, after = before or {}, after or {}
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        if key in _IGNORED:
            continue
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in SECRET_FIELDS:
            alias = SECRET_FIELDS[key]
            if alias:
                out[alias] = _secret_change(old, new)
            continue
        entry: dict[str, Any] = {}
        if key in before:
            entry["from"] = old
        if key in after:
            entry["to"] = new
        out[key] = entry
    return out
