"""Which addresses ngm may call, and a request that holds to it.

Link-local and cloud-metadata addresses are refused unless an operator allows them
(NGM_OUTBOUND_ALLOW=169.254.0.0/16,...). The host is resolved once, every address it resolves to is
checked, and the connection goes to the checked address (Host header and TLS SNI keep the name), so a
DNS answer that changes between check and connect cannot redirect the request. Redirects are followed
only within the same origin, and bodies are read up to a cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

BLOCKED_NETWORKS = (
    "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches local services on some systems
    "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OpenStack metadata at 169.254.169.254
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure wire server
    "224.0.0.0/4",  # multicast
    "255.255.255.255/32",
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "ff00::/8",  # IPv6 multicast
)


class OutboundRefused(Exception):
    """The request was not made: `outcome` says why (address_blocked, dns_error, redirect_refused)."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _networks(values) -> tuple:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v and v.strip())


@dataclass(frozen=True)
class OutboundPolicy:
    blocked: tuple = field(default_factory=lambda: _networks(BLOCKED_NETWORKS))
    allowed: tuple = ()

    @classmethod
    def from_setting(cls, allow: str | None) -> "OutboundPolicy":
        return cls(allowed=_networks((allow or "").split(",")))

    def permits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return True
        return not any(ip in net for net in self.blocked)


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


async def resolve(host: str, port: int, policy: OutboundPolicy) -> str:
    """One permitted address for host, or OutboundRefused. Every resolved address must be permitted."""
    try:
        addresses = [ipaddress.ip_address(host).compressed]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise OutboundRefused("dns_error", f"cannot resolve {host}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
    refused = [a for a in addresses if not policy.permits(a)]
    if refused:
        raise OutboundRefused("address_blocked", f"{host} resolves to {refused[0]}, a link-local or metadata "
                                                 "address (allow it with NGM_OUTBOUND_ALLOW)")
    return addresses[0]


@dataclass
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    body: bytes
    url: str


async def safe_request(client: httpx.AsyncClient, method: str, url: str, *, policy: OutboundPolicy,
                       headers: dict | None = None, content: bytes | None = None, max_body: int = 64 * 1024,
                       max_redirects: int = 3) -> OutboundResponse:
    start_origin = origin(url)
    for _ in range(max_redirects + 1):
        scheme, host, port = origin(url)
        address = await resolve(host, port, policy)
        parts = urlsplit(url)
        pinned_host = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{pinned_host}:{port}").geturl()
        request_headers = {**(headers or {}), "Host": parts.netloc.rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        request = client.build_request(method, pinned, headers=request_headers, content=content,
                                       extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= max_body:
                    break
        finally:
            await response.aclose()
        location = response.headers.get("location")
        if response.is_redirect and location:
            target = urljoin(url, location)
            if origin(target) != start_origin:
                raise OutboundRefused("redirect_refused", f"refused a redirect to another origin ({origin(target)[1]})")
            url = target
            continue
        return OutboundResponse(response.status_code, response.headers, bytes(body[:max_body]), url)
    raise OutboundRefused("redirect_refused", f"more than {max_redirects} redirects")
