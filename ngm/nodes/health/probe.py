"""One health probe of one gateway: GET its health URL (safely), classify what happened, and read the
Nexus health JSON when there is one (`{"status": ..., "workflows": {name: status}}`)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field

import aiohttp

from ngm.nodes.outbound.policy import OutboundClient, OutboundRefused, origin

MAX_BODY_BYTES = 64 * 1024  # a health answer is small; never read an unbounded body
_FINE = {"healthy", "ok", "up", "pass", "unknown"}
_DOWN = {"unhealthy", "down", "fail", "error", "critical"}


@dataclass
class ProbeResult:
    # ok | http_error | timeout | connection_refused | tls_error | dns_error | address_blocked |
    # redirect_refused | reported_unhealthy | error
    outcome: str
    response_time_ms: float
    http_status: int | None = None
    error: str | None = None
    unhealthy_workflows: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def summary(self) -> str:
        """Short text stored as last_health_status."""
        return f"http_{self.http_status}" if self.outcome == "http_error" else self.outcome

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "summary": self.summary}


def _causes(exc: BaseException | None):
    """The exception and everything it wraps (aiohttp -> OSError -> ConnectionRefusedError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__


def classify_exception(exc: BaseException) -> tuple[str, str]:
    causes = list(_causes(exc))
    refused = next((c for c in causes if isinstance(c, OutboundRefused)), None)
    if refused is not None:
        return refused.outcome, refused.message
    if any(isinstance(c, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)) for c in causes):
        return "timeout", "no answer within the timeout"
    if any(isinstance(c, (ssl.SSLError, aiohttp.ClientSSLError)) for c in causes):
        return "tls_error", "TLS handshake failed"
    if any(isinstance(c, socket.gaierror) for c in causes) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error", "the host name does not resolve"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection_refused", "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "error", "could not connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return "error", "connection dropped"
    return "error", type(exc).__name__


def read_nexus_health(body: bytes) -> tuple[str | None, list[str]]:
    """(reported overall status, unhealthy workflow names) from Nexus health JSON; (None, []) otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, []
    if not isinstance(data, dict):
        return None, []
    workflows = data.get("workflows")
    bad = []
    if isinstance(workflows, dict):  # names a database can store (a gateway's answer is anybody's text)
        bad = sorted(name for name, state in workflows.items()
                     if str(state).lower() not in _FINE and _storable(name))[:_MAX_NAMES]
    status = data.get("status")
    return (status.lower() if isinstance(status, str) and _storable(status) else None), bad


_MAX_NAMES = 100  # unhealthy workflow names kept of one answer


def _storable(text: str) -> bool:
    """Short text without NUL or unpaired surrogates (which neither database stores, nor JSON parsers read)."""
    if len(text) > 200 or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def probe(client: OutboundClient, url: str, api_key: str | None, *, timeout: float = 5.0,
                key_origin: str | None = None) -> ProbeResult:
    """key_origin: the gateway's API base (api_url with api_port). The key is sent only when the health URL has
    the same origin."""
    headers = {"Accept": "application/json", "User-Agent": "ngm-health/1"}
    if api_key and (key_origin is None or origin(key_origin) == origin(url)):
        headers["X-API-Key"] = api_key
    start = time.perf_counter()
    try:
        resp = await client.request("GET", url, headers=headers, timeout=timeout, max_body=MAX_BODY_BYTES)
    except Exception as exc:  # every failure is an observation, not a crash
        outcome, message = classify_exception(exc)
        return ProbeResult(outcome, (time.perf_counter() - start) * 1000, None, message)
    elapsed = (time.perf_counter() - start) * 1000
    reported, bad_workflows = read_nexus_health(resp.body)
    if not 200 <= resp.status_code < 300:
        return ProbeResult("http_error", elapsed, resp.status_code, f"answered HTTP {resp.status_code}",
                           bad_workflows)
    if reported in _DOWN:
        return ProbeResult("reported_unhealthy", elapsed, resp.status_code, f"reported status {reported}",
                           bad_workflows)
    return ProbeResult("ok", elapsed, resp.status_code, None, bad_workflows)
