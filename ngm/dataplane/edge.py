"""What both HTTP edges read of a request alike (the router's protocol and the management API's middleware):
its request id and the API key it presents."""

from __future__ import annotations

import itertools
import os
import re

from ngm.errors import Unauthorized

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")  # a caller's id is echoed and logged: keep it inert
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


def request_id(supplied: bytes | None) -> str:
    """The caller's X-Request-ID when it is inert, else a new one: 32 hex digits like uuid4().hex,
    unique per process by a random prefix, at a counter's cost (this runs for every request)."""
    if supplied and _REQUEST_ID.fullmatch(supplied):
        return supplied.decode("latin-1")
    return f"{_ID_PREFIX}{next(_ids):016x}"


def is_credential(name: bytes, value: bytes) -> bool:
    """A header that presents a key: X-API-Key, or Authorization with the Bearer scheme."""
    return name == b"x-api-key" or (name == b"authorization" and value[:7].lower() == b"bearer ")


def conflicting_credentials() -> Unauthorized:
    return Unauthorized("more than one API key presented (Authorization: Bearer and X-API-Key, or one of them "
                        "twice): send exactly one", code="conflicting_credentials")


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key else None
