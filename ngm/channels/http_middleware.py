"""One ASGI middleware for every HTTP request: request id, API-key authentication, access log.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses (SSE) pass through unbuffered. The access line
names the key id, never the key, and logs the path without the query. Agent traffic (the forwarding
router) never gets here: ngm/channels/agent_http.py serves it on the connection.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from ngm.config.logging import access_log
from ngm.errors import NgmError, RateLimitExceeded
from ngm.nodes.ratelimit.limiter import RateLimited

PROTECTED_PREFIXES = ("/api/", "/mcp")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a caller's id is echoed and logged: keep it inert


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key else None


async def send_error(send, exc: NgmError, request_id: str, extra_headers: list | None = None) -> None:
    body = json.dumps(exc.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode())] + (extra_headers or [])
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestMiddleware:
    def __init__(self, app, authenticator, limiter=None):
        self.app = app
        self.limiter = limiter  # the management API's per-key limit
        self.authenticate = authenticator  # async (presented key) -> Principal, raises Unauthorized

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        principal = None

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if scope["path"].startswith(PROTECTED_PREFIXES):
                try:
                    principal = await self.authenticate(presented_key(headers))
                except NgmError as exc:
                    status["code"] = exc.status
                    return await send_error(send, exc, request_id, [(b"www-authenticate", b'Bearer realm="ngm"')])
                scope["state"]["principal"] = principal
                if self.limiter is not None:
                    try:
                        await self.limiter.check_api(principal)
                    except RateLimited as refused:
                        status["code"] = refused.status
                        return await send_error(send, RateLimitExceeded(refused.message, details=refused.details),
                                                request_id, refused.headers)
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.write(f'{_client(scope)} "{scope["method"]} {_path(scope)}" {status["code"]} '
                             f'{(time.perf_counter() - start) * 1000:.1f}ms '
                             f'key={principal.key_id if principal else "-"} rid={request_id}')


def _path(scope) -> str:
    """The path as sent (still percent-encoded): a decoded %0A would forge a log line."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"].encode("unicode_escape").decode("ascii")


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "-"
