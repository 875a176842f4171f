"""What an invoke request is, /api/v1/agents/{agent_id}/invoke/{path}: its path, its body's limit, what the
gateway is told about the caller, and the refusal answered in its stead. Apart from the router so that the
server's protocol (ngm/dataplane/protocol.py) and the router each import it, and the compiled router can take
the protocol's request type."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_to_bytes

if TYPE_CHECKING:
    from typing import TypeAlias

    IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network  # a trusted proxy's network

PREFIX = "/api/v1/agents/"
_PREFIX = PREFIX.encode()
MAX_BODY = 10 * 1024 * 1024
# an encoded slash or backslash, or a raw backslash: read as a separator by some servers and not by others
_SEPARATOR = re.compile(rb"%2f|%5c|\\", re.IGNORECASE)
_IIS_UNICODE = re.compile(rb"%u[0-9a-f]{4}", re.IGNORECASE)  # %u002e: a dot to IIS and what imitates it
_CONTROL = re.compile(rb"%(?:[01][0-9a-f]|7f)|[\x00-\x1f\x7f]", re.IGNORECASE)  # ..%00 is '..' to C strings


def escapes_base(rest: bytes) -> bool:
    """Whether a path could leave the gateway's base path (or mean different paths to different servers): a
    dot segment ('.' or '..'), raw or percent-encoded however many times, with a ';' parameter (Tomcat), in
    %u form (IIS), in look-alike characters (fullwidth dots and slashes, as NFKC folds them) or overlong UTF-8;
    or an encoded slash or a backslash."""
    if _IIS_UNICODE.search(rest) or _CONTROL.search(rest):
        return True
    for segment in rest.split(b"/"):
        for _ in range(4):  # %252e%252e is '..' to a server that decodes twice
            if _SEPARATOR.search(segment) or _dot_segment(segment):
                return True
            decoded = unquote_to_bytes(segment)
            if decoded == segment:
                break
            segment = decoded
        else:
            return True  # still encoded after four rounds: nobody means that honestly
    return False


def _dot_segment(segment: bytes) -> bool:
    if segment in (b".", b".."):
        return True
    if segment.isascii() and b"." not in segment and b";" not in segment:
        return False  # the usual segment: nothing to fold
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:  # overlong forms (%c0%ae) are not UTF-8, and mean a dot to lax decoders
        return True
    folded = unicodedata.normalize("NFKC", text)
    if "%" in folded and "%" not in text:  # a look-alike percent sign: encoded again for who folds first
        return True
    return folded.split(";", 1)[0] in (".", "..") or "/" in folded or "\\" in folded


def invoke_target(raw_path: bytes, query: bytes) -> tuple[str, bytes | None] | None:
    """(agent id, the gateway's request target) of an invoke request's path as sent, or None when it is not an
    invoke path. The target is the path after /invoke and the query exactly as the caller sent them
    (percent-encoding intact); None when that path could escape the gateway's base path (answered 400)."""
    if not raw_path.startswith(_PREFIX):
        return None
    agent_raw, sep, rest = raw_path[len(_PREFIX):].partition(b"/invoke")
    if not sep or (rest and not rest.startswith(b"/")):
        return None
    agent = unquote(agent_raw.decode("latin-1"))
    if not agent or "/" in agent:
        return None
    if escapes_base(rest):
        return agent, None
    rest = rest or b"/"
    return agent, rest + b"?" + query if query else rest


def forwarded_lines(peer: str, scheme: str, header_map: dict[bytes, bytes] | None = None,
                    trusted: tuple[IPNetwork, ...] = ()) -> bytes:
    """The header lines that tell the gateway who called, made from what this router saw: the connection's
    address and scheme. The caller's own X-Forwarded-*, Forwarded and X-Real-IP are never passed on, except
    from a trusted proxy (header_map given): then its chain is extended and the client is the rightmost
    address in it that is not a trusted proxy. Starts with CRLF: it follows the X-Request-ID value."""
    node = f'"[{peer}]"' if ":" in peer else peer
    chain, forwarded = [peer], f"for={node};proto={scheme}"
    if header_map is not None:
        prior = header_map.get(b"x-forwarded-for")
        if prior:
            chain = [a.strip() for a in prior.decode("latin-1").split(",") if a.strip()] + chain
        prior_forwarded = header_map.get(b"forwarded")
        if prior_forwarded:
            forwarded = prior_forwarded.decode("latin-1") + ", " + forwarded
        scheme = (header_map.get(b"x-forwarded-proto") or scheme.encode()).decode("latin-1")
    client = next((a for a in reversed(chain) if not _in(a, trusted)), chain[0])
    return ("\r\nx-forwarded-proto: %s\r\nx-forwarded-for: %s\r\nx-real-ip: %s\r\nforwarded: %s\r\n"
            % (scheme, ", ".join(chain), client, forwarded)).encode("latin-1")


def _in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def trusted_networks(setting: str) -> tuple[IPNetwork, ...]:
    """NGM_TRUSTED_PROXIES: comma-separated CIDRs of proxies whose X-Forwarded-* this router believes."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in (setting or "").split(",") if v.strip())


def is_trusted(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    return bool(networks) and address is not None and _in(address, networks)


