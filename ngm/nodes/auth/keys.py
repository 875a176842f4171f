"""Callers' API keys and roles: pure functions, no I/O.

A key is `ngm_` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored: with that much
entropy a slow password hash buys nothing, and a fast hash keeps lookup to one indexed read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

ROLES = ("org_viewer", "org_member", "org_admin", "org_owner")  # weakest first
_RANK = {role: i for i, role in enumerate(ROLES)}
KEY_PREFIX = "ngm_"
_KEY_RE = re.compile(r"^ngm_[A-Za-z0-9_-]{43}$")
ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def role_at_least(role: str, required: str) -> bool:
    return role in _RANK and _RANK[role] >= _RANK[required]


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(value: str) -> bool:
    return bool(_KEY_RE.fullmatch(value))


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show so people can tell keys apart: `ngm_` and 6 characters."""
    return key[: len(KEY_PREFIX) + 6]


def check_org_id(value: str) -> str:
    if not ORG_RE.fullmatch(value or ""):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key bound to one organization and one role, or a local operator."""

    organization_id: str
    role: str
    key_id: str
    name: str = ""
    local: bool = False  # in-process CLI run by someone with the database and the key file
    rate_limit: int | None = None  # overrides a gateway's per_user_rate_limit for this key
    api_rate_limit: int | None = None  # overrides NGM_API_RATE_LIMIT (the management API) for this key

    def allows(self, required_role: str) -> bool:
        return role_at_least(self.role, required_role)

    def actor(self) -> dict:
        return {"id": self.key_id, "name": self.name, "role": self.role, "local": self.local}
