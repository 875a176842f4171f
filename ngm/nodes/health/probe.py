"""One health probe of one gateway: GET its health URL (safely), classify what happened, and read the
Nexus health JSON when there is one (`{"status": ..., "workflows": {name: status}}`).

Probes go through ProbeClient, the router's HTTP/1.1 client (asyncio protocols and httptools) with a connection
per probe, not aiohttp: 0.18 ms of CPU per probe of a fresh connection against aiohttp's 0.83-1.09 ms (3,000
stand-ins, bench/health_sweep.py's farm), which is most of what a sweep costs (#25). It holds to the same
outbound policy as every other call: the host is read as aiohttp read it (yarl), a literal address is checked
before anything else, a name is refused before lookup when calls are confined and checked on what it resolves
to, and redirects are followed within the origin only.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field

import aiohttp
from yarl import URL

from ngm.dataplane.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from ngm.nodes.gateways.validation import client_host
from ngm.nodes.outbound.policy import OutboundPolicy, OutboundRefused, OutboundResponse, origin, redirect_target

MAX_BODY_BYTES = 64 * 1024  # a health answer is small; never read an unbounded body
MAX_ERROR = 300  # characters of a failure's description kept (it may quote what a gateway sent)
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
    """(outcome, a description of at most MAX_ERROR characters: it is stored, and may quote a gateway)."""
    outcome, message = _classify(exc)
    return outcome, message[:MAX_ERROR]


def _classify(exc: BaseException) -> tuple[str, str]:
    causes = list(_causes(exc))
    refused = next((c for c in causes if isinstance(c, OutboundRefused)), None)
    if refused is not None:
        return refused.outcome, refused.message
    if any(isinstance(c, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError, UpstreamTimeout))
           for c in causes):
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
    if isinstance(exc, UpstreamError):  # its message names the host and what failed, nothing more
        return "error", str(exc)
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


class ProbeClient:
    """GETs for health probes: a connection each (100,000 gateways probed every 30 s must not hold 100,000 idle
    connections), the outbound policy on every hop."""

    def __init__(self, policy: OutboundPolicy):
        self.policy = policy
        self.pool = UpstreamPool(policy, max_idle_per_origin=0, connect_timeout=3600.0)  # the probe's timeout rules
        self._permitted: set[str] = set()  # literal addresses the policy permits (a decision that never changes)

    async def get(self, url: str, headers: dict[str, str], *, timeout: float, max_body: int = MAX_BODY_BYTES,
                  max_redirects: int = 3) -> OutboundResponse:
        """The caller bounds the whole exchange with `timeout`; the pool closes a connection whose answer has not
        begun by then, even when the caller was cancelled."""
        start_origin = origin(url)
        for _ in range(max_redirects + 1):
            scheme, host, port, head = _request_head(url)
            if host not in self._permitted:
                try:
                    self.policy.check(host, [ipaddress.ip_address(host.split("%", 1)[0]).compressed])  # a literal
                    self._permitted.add(host)
                except ValueError:
                    self.policy.check_name(host)  # a name: the pool checks what it resolves to
            if any(c in v for v in headers.values() for c in "\0\r\n"):
                raise OutboundRefused("error", "a header holds a line break")
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            resp = await self.pool.request(scheme, host, port, head + extra.encode("latin-1") + b"\r\n", b"",
                                           timeout=timeout)  # its timer closes a connection left waiting
            try:
                body = bytearray()
                while len(body) < max_body:
                    chunk = resp.read_nowait()
                    if chunk is None:
                        await resp.wait()
                    elif not chunk:
                        break
                    else:
                        body += chunk
            finally:
                resp.keep_alive = False  # closed, never pooled: read to the cap or not
                resp.release()
            location = next((v.decode("latin-1") for k, v in resp.headers if k.lower() == b"location"), None)
            target = redirect_target(url, resp.status, location, start_origin)
            if target is not None:
                url = target
                continue
            return OutboundResponse(resp.status, {}, bytes(body[:max_body]), url)
        raise OutboundRefused("redirect_refused", f"more than {max_redirects} redirects")

    async def close(self) -> None:
        await self.pool.close()


@functools.lru_cache(maxsize=65536)
def _request_head(url: str) -> tuple[str, str, int, bytes]:
    """(scheme, host, port, the request head up to the caller's headers) of a GET of `url`, the host read as
    aiohttp read it (what every earlier check was made on). Made once per URL: parsing cost more than the rest
    of a probe."""
    parsed = URL(url)
    host = (client_host(url) or "").strip("[]")
    if parsed.scheme not in ("http", "https") or not host:
        raise OutboundRefused("error", "not an http(s) URL with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    target = parsed.raw_path_qs or "/"
    if any(c in target for c in "\0\r\n ") or any(c in host for c in "\0\r\n /"):
        raise OutboundRefused("error", "the URL holds a line break or space")
    name = (f"[{host}]" if ":" in host else host) + ("" if parsed.is_default_port() else f":{port}")
    head = f"GET {target} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n"
    return parsed.scheme, host, port, head.encode("ascii")  # yarl's host and target are ASCII (IDNA, %-encoded)


async def probe(client: ProbeClient, url: str, api_key: str | None, *, timeout: float = 5.0,
                key_origin: str | None = None) -> ProbeResult:
    """key_origin: the gateway's API base (api_url with api_port). The key is sent only when the health URL has
    the same origin."""
    headers = {"Accept": "application/json", "User-Agent": "ngm-health/1"}
    if api_key and (key_origin is None or origin(key_origin) == origin(url)):
        headers["X-API-Key"] = api_key
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            resp = await client.get(url, headers, timeout=timeout)
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
