"""Errors every channel understands: each carries an HTTP status, a stable code and the field at fault.

REST renders them as {"error": {"code", "message", "details"}}, the CLI as a message and an exit code,
MCP as an error result. Nodes raise them; the executor finds them in Kailash's exception chain.
"""

from __future__ import annotations

from typing import Any


class NgmError(Exception):
    status = 500
    code = "internal_error"
    retry_after: int | None = None  # seconds, sent as Retry-After
    headers: list[tuple[bytes, bytes]] | None = None  # more header lines of the answer (the RateLimit fields)

    def __init__(self, message: str, *, field: str | None = None, details: Any = None, code: str | None = None,
                 status: int | None = None, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details
        if code:
            self.code = code
        if status:
            self.status = status
        if headers:
            self.headers = headers

    def to_body(self) -> dict:
        details = self.details
        if details is None and self.field:
            details = [{"field": self.field, "message": self.message}]
        return {"error": {"code": self.code, "message": self.message, "details": details}}


class ValidationFailed(NgmError):
    status = 422
    code = "validation_error"

    @classmethod
    def from_fields(cls, errors: list[dict]) -> "ValidationFailed":
        """errors: [{"field": ..., "message": ...}, ...]"""
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid input"
        return cls(summary, details=errors, field=errors[0]["field"] if errors else None)


class Unauthorized(NgmError):
    status = 401
    code = "unauthorized"


class Forbidden(NgmError):
    status = 403
    code = "forbidden"


class NotFound(NgmError):
    status = 404
    code = "not_found"


class Conflict(NgmError):
    status = 409
    code = "conflict"


class Unavailable(NgmError):
    status = 503
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached: management answers 503 with Retry-After; the router serves on."""

    code = "database_unavailable"
    retry_after = 5

    def __init__(self, message: str = "the database is unreachable; try again shortly"):
        super().__init__(message)


class BodyTooLarge(NgmError):
    status = 413
    code = "body_too_large"

    def __init__(self, limit: int):
        super().__init__(f"request bodies are limited to {limit} bytes", field="body")


class RateLimited(NgmError):
    """A rate limit refused the request (429), or the limiter could not decide and the deployment fails closed
    (503); `headers` carries Retry-After and the RateLimit fields."""

    status = 429
    code = "rate_limited"


class Refusal(NgmError):
    """The router's refusals, whose status is decided where they are raised (400, 404, 413, 502, 503, 504)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message, details=details, code=code, status=status, headers=headers)


def find_cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in exc's chain: Kailash wraps node exceptions (WorkflowExecutionError ->
    NodeExecutionError -> ours)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))  # the explicit cause, else the implicit context unless `raise ... from None` hid it
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None
