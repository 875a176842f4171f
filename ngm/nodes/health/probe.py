"""One health probe of one gateway: GET its health URL with its key, classify what happened."""

from __future__ import annotations

import ssl
import time
from dataclasses import asdict, dataclass

import httpx

MAX_BODY_BYTES = 64 * 1024  # a health answer is small; never read an unbounded body


@dataclass
class ProbeResult:
    outcome: str  # ok | http_error | timeout | connection_refused | tls_error | error
    response_time_ms: float
    http_status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def summary(self) -> str:
        """Short text stored as last_health_status."""
        if self.outcome == "http_error":
            return f"http_{self.http_status}"
        return self.outcome

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "summary": self.summary}


def _causes(exc: BaseException):
    """The exception and everything it wraps (httpx -> httpcore -> OSError -> ConnectionRefusedError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _classify(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", "no answer within the timeout"
    if isinstance(exc, httpx.ConnectError):
        causes = list(_causes(exc))
        if any(isinstance(c, ssl.SSLError) for c in causes):
            return "tls_error", "TLS handshake failed"
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return "connection_refused", "connection refused"
        return "error", "could not connect"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "error", "connection dropped"
    return "error", type(exc).__name__


async def probe(client: httpx.AsyncClient, url: str, api_key: str | None, timeout: float = 5.0) -> ProbeResult:
    headers = {"Accept": "application/json", "User-Agent": "ngm-health/1"}
    if api_key:
        headers["X-API-Key"] = api_key
    start = time.perf_counter()
    try:
        async with client.stream("GET", url, headers=headers, timeout=timeout) as resp:
            read = 0
            async for chunk in resp.aiter_raw():
                read += len(chunk)
                if read >= MAX_BODY_BYTES:
                    break
            elapsed = (time.perf_counter() - start) * 1000
            if 200 <= resp.status_code < 300:
                return ProbeResult("ok", elapsed, resp.status_code)
            return ProbeResult("http_error", elapsed, resp.status_code, f"answered HTTP {resp.status_code}")
    except Exception as exc:  # every failure is an observation, not a crash
        outcome, message = _classify(exc)
        return ProbeResult(outcome, (time.perf_counter() - start) * 1000, None, message)
