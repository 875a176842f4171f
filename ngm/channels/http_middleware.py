"""One ASGI middleware for every HTTP request: request id, API-key authentication, the body limit, access log.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses (SSE) pass through unbuffered. The access line
names the key id, never the key, and logs the path without the query. Agent traffic (the forwarding
router) never gets here: ngm/dataplane/protocol.py serves it on the connection.

Bodies: the REST routes refuse a body over the limit (413) after their role check, by its declared length
before reading or while reading it (ngm/channels/rest.py); MCP's transport reads the body itself, so for
/mcp the middleware reads it first, at most the limit, and hands it on.
"""

from __future__ import annotations

import json
import logging
import time

from ngm.dataplane.access_log import access_log
from ngm.dataplane.edge import conflicting_credentials, is_credential, presented_key, request_id
from ngm.errors import BodyTooLarge, NgmError, RateLimited, ValidationFailed
from ngm.workflows.schema import parse_json

log = logging.getLogger("ngm.http")
PROTECTED_PREFIXES = ("/api/", "/mcp")
MAX_BODY_BYTES = 1024 * 1024  # management and MCP bodies are small; agent traffic has its own limit
async def send_error(send, exc: NgmError, request_id: str, extra_headers: list | None = None) -> None:
    body = json.dumps(exc.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode()), *(extra_headers or ()), *(exc.headers or ())]
    if getattr(exc, "retry_after", None):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
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
        rid = request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500}
        principal = None

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            if scope["path"].startswith(PROTECTED_PREFIXES):
                try:
                    if sum(is_credential(name, value) for name, value in scope["headers"]) > 1:
                        raise conflicting_credentials()
                    principal = await self.authenticate(presented_key(headers))
                except NgmError as exc:
                    status["code"] = exc.status
                    challenge = [(b"www-authenticate", b'Bearer realm="ngm"')] if exc.status == 401 else []
                    return await send_error(send, exc, rid, challenge)
                except Exception as exc:  # never a bare 500 page: the usual error shape, the cause in the log
                    log.error("authentication failed (request %s)", rid, exc_info=exc)
                    status["code"] = 500
                    return await send_error(send, NgmError(f"internal error (request {rid})"), rid)
                scope["state"]["principal"] = principal
                if self.limiter is not None:
                    try:
                        await self.limiter.check_api(principal)
                    except RateLimited as refused:
                        status["code"] = refused.status
                        return await send_error(send, refused, rid)
                if scope["path"].startswith("/mcp") and scope["method"] == "POST":
                    try:
                        receive = await _buffered(receive, headers.get(b"content-length"))
                    except NgmError as exc:
                        status["code"] = exc.status
                        return await send_error(send, exc, rid)
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.add(scope.get("client"), scope["method"], _path(scope), status["code"], start, principal, rid)


def repeated_fields(body: bytes) -> None:
    """422 for a JSON body that gives a field twice, anywhere in it: the MCP transport would take the last."""
    try:
        parse_json(body)
    except ValidationFailed as exc:
        if exc.field != "body":  # not JSON at all: the transport answers that in its own terms
            raise


async def _buffered(receive, length: bytes | None):
    """Read the whole body (at most MAX_BODY_BYTES, else 413) and return a receive that hands it on."""
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise BodyTooLarge(MAX_BODY_BYTES)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(MAX_BODY_BYTES)
        if not message.get("more_body"):
            break
    repeated_fields(bytes(body))
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await receive()

    return replay


def _path(scope) -> str:
    """The path as sent (still percent-encoded): a decoded %0A would forge a log line."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"].encode("unicode_escape").decode("ascii")
