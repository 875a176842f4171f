"""Gateway validation rules as pure functions; the input models and the store both call them."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "staging", "production")
GATEWAY_TYPES = ("shared", "dedicated", "private")
STATUSES = ("active", "inactive", "provisioning", "error")
SETTABLE_STATUSES = ("active", "inactive", "provisioning")  # `error` belongs to the health monitor
HEALTH_STATUSES = ("healthy", "degraded", "unhealthy", "unknown")
AUTH_METHODS = ("api_key", "jwt", "oauth2", "mtls")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_REGION = re.compile(REGION_PATTERN)
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")  # a key travels in a header: no spaces, CR or LF


def check_name(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("must not be empty")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def check_http_url(value: str) -> str:
    if _CONTROL.search(value) or " " in value:
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must include a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not embed credentials; set api_key instead")
    if port == 0 or parts.netloc.endswith(":"):  # "host:" names no port, and "host:" + api_port is no URL
        raise ValueError("port must be between 1 and 65535")
    if parts.fragment:
        raise ValueError("must not contain a fragment")
    host = ascii_host(parts.hostname)
    if host is None:
        raise ValueError("must name a valid host")
    if not _same_host(client_host(value), host):  # e.g. U+1FBF0-9: a name to Python's IDNA, digits to yarl's
        raise ValueError("must name its host in a form every HTTP client reads alike (plain ASCII letters and "
                         "digits, or an internationalised domain name)")
    if _numeric_host(host) and not _CANONICAL_IPV4.fullmatch(host):
        raise ValueError("must spell an IPv4 address as four decimal numbers (e.g. 10.0.0.5), not in decimal, "
                         "octal, hexadecimal or shortened form")
    return value


_CANONICAL_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|\d+)$", re.IGNORECASE)


def ascii_host(host: str) -> str | None:
    """The host as an HTTP client will look it up: lowercase, internationalised names in their ASCII (IDNA)
    form, which also folds look-alike digits (fullwidth '１２７' is '127'). None when it has none."""
    if ":" in host:  # an IPv6 literal
        return host.lower()
    if "%" in host:  # percent-encoded hosts are decoded by some clients
        return None
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def client_host(url: str) -> str | None:
    """The host aiohttp will connect to for this URL (yarl's parse, IDNA by UTS 46), lowercase; None when it
    finds none."""
    from yarl import URL

    try:
        host = URL(url).raw_host
    except ValueError:
        return None
    return host.lower() if host else None


def _same_host(a: str | None, b: str) -> bool:
    if a == b:
        return True
    try:  # one IPv6 address, spelled two ways (yarl compresses ::ffff:169.254.169.254 to ::ffff:a9fe:a9fe)
        return a is not None and ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return False


def _numeric_host(host: str) -> bool:
    """Whether a URL parser (WHATWG, and the resolvers of most HTTP clients) reads this host as an IPv4
    address: its last label is a number, in decimal, octal or hexadecimal (http://2852039166 is 169.254.169.254)."""
    if ":" in host:
        return False
    labels = host.rstrip(".").split(".")
    return bool(_NUMERIC_LABEL.fullmatch(labels[-1]))


def same_origin(a: str, b: str) -> bool:
    """Scheme, host and port alike (the port as written or the scheme's default)."""
    def origin(url: str) -> tuple:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)

    return origin(a) == origin(b)


def check_region(value: str) -> str:
    if not _REGION.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (e.g. eu-west-1)")
    return value


def check_secret(value: str) -> str:
    if not _HEADER_SAFE.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces")
    return value


def check_unique_items(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a value")
    return values


def consistency_errors(record: dict) -> list[dict]:
    """Rules across fields, checked on the merged record (so partial updates are checked too)."""
    errors = []
    lo, hi = record.get("min_instances"), record.get("max_instances")
    if lo is not None and hi is not None and lo > hi:
        errors.append({"field": "min_instances", "message": f"must be less than or equal to max_instances ({hi})"})
    port, url_port = record.get("api_port"), _url_port(record.get("api_url"))
    if port is not None and url_port is not None and port != url_port:
        errors.append({"field": "api_port", "message": f"conflicts with the port in api_url ({url_port})"})
    timeout, interval = record.get("health_check_timeout"), record.get("health_check_interval")
    if timeout is not None and interval is not None and timeout > interval:
        errors.append({"field": "health_check_timeout",
                       "message": f"must not exceed health_check_interval ({interval:g} s)"})
    if "jwt" in (record.get("auth_methods") or []) and not record.get("jwt_issuer"):
        errors.append({"field": "jwt_issuer", "message": "is required when auth_methods includes jwt"})
    return errors


def _url_port(url: str | None) -> int | None:
    try:
        return urlsplit(url).port if url else None
    except ValueError:
        return None


def base_url(record: dict) -> str:
    """The gateway's API base: api_url, with api_port added when the URL names no port."""
    url = record["api_url"].rstrip("/")
    port = record.get("api_port")
    if port and _url_port(url) is None:
        parts = urlsplit(url)
        url = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return url


def health_url(record: dict) -> str:
    """Where a gateway answers health checks: its health_check_url, else the API base + /health."""
    if record.get("health_check_url"):
        return record["health_check_url"]
    return base_url(record) + "/health"
