"""Typed settings read once from the environment (the public interface names them in DESIGN.md)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


def _cidrs(env: Mapping[str, str], name: str) -> str:
    """A comma-separated list of CIDRs, checked here so that a typo stops the start with the variable's name."""
    import ipaddress

    value = env.get(name) or ""
    for item in value.split(","):
        if item.strip():
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{name}: {item.strip()!r} is not an address or CIDR (e.g. 10.0.0.0/8)") from None
    return value


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ngm"


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """A URL from the environment, its scheme one of `schemes` and its port a number (checked here, so that a
    typo stops the start with the variable's name rather than a driver's traceback)."""
    from urllib.parse import urlsplit

    value = (env.get(name) or "").strip()
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{name}: not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{name}: must start with {' or '.join(s + '://' for s in schemes)}")
    if parts.scheme.startswith("redis") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"{name}: the path is the database number (redis://host:6379/0)")
    return value


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float, minimum: float = 0,
            maximum: float = math.inf):
    """A number from the environment; one that does not parse stops the start with the variable's name."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}: {raw!r} is not {noun}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        bound = f"between {minimum} and {maximum:g}" if math.isfinite(maximum) else f"of at least {minimum}"
        raise ValueError(f"{name}: {raw!r} must be a finite number {bound}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name}: {raw!r} is not on or off")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    database_url: str
    encryption_keys: tuple[str, ...] = ()
    encryption_key_file: Path | None = None
    redis_url: str | None = None
    log_level: str = "INFO"
    # Seconds an authenticated API key stays cached; bounds how long a revoked key keeps working.
    auth_cache_seconds: float = 2.0
    monitor_enabled: bool = True  # the background health monitor in `ngm serve`
    monitor_concurrency: int = 256  # probes in flight at once
    monitor_lease_seconds: float = 10.0  # with Redis: how long the probing instance's lease lasts
    health_history_days: float = 7.0
    outbound_allow: str = ""  # CIDRs exempt from the link-local/metadata block, comma-separated
    outbound_only: str = ""  # CIDRs every outbound call must stay inside (names but localhost refused unresolved)
    webhook_max_attempts: int = 8
    api_rate_limit: int = 3000  # management API requests per key per minute; 0 = unlimited
    trusted_proxies: str = ""  # CIDRs of proxies in front of the router whose X-Forwarded-For is believed
    # the routing table is re-read in full this often; in between, only organizations whose version moved
    routing_resync_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Raises ValueError naming the variable whose value does not parse."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("NGM_DATA_DIR") or _default_data_dir(env)).expanduser()
        keys = tuple(k.strip() for k in env.get("NGM_ENCRYPTION_KEYS", "").split(",") if k.strip())
        key_file = env.get("NGM_ENCRYPTION_KEY_FILE")
        log_level = (env.get("NGM_LOG_LEVEL") or "INFO").strip().upper()
        if log_level not in _LOG_LEVELS:
            raise ValueError(f"NGM_LOG_LEVEL: {log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        return cls(
            database_url=_url(env, "NGM_DATABASE_URL", ("sqlite", "postgresql", "postgres"))
            or f"sqlite:///{data_dir / 'ngm.db'}",
            encryption_keys=keys,
            encryption_key_file=Path(key_file).expanduser() if key_file else data_dir / "encryption.key",
            redis_url=_url(env, "NGM_REDIS_URL", ("redis", "rediss", "unix")),
            log_level=log_level,
            auth_cache_seconds=_number(env, "NGM_AUTH_CACHE_SECONDS", 2.0, maximum=3600),
            monitor_enabled=_switch(env, "NGM_MONITOR", True),
            monitor_concurrency=_number(env, "NGM_MONITOR_CONCURRENCY", 256, int, minimum=1, maximum=10_000),
            monitor_lease_seconds=_number(env, "NGM_MONITOR_LEASE_SECONDS", 10.0, minimum=1, maximum=3600),
            health_history_days=_number(env, "NGM_HEALTH_HISTORY_DAYS", 7.0, maximum=3650),
            outbound_allow=_cidrs(env, "NGM_OUTBOUND_ALLOW"),
            outbound_only=_cidrs(env, "NGM_OUTBOUND_ONLY"),
            webhook_max_attempts=_number(env, "NGM_WEBHOOK_MAX_ATTEMPTS", 8, int, minimum=1, maximum=100),
            api_rate_limit=_number(env, "NGM_API_RATE_LIMIT", 3000, int),
            trusted_proxies=_cidrs(env, "NGM_TRUSTED_PROXIES"),
            routing_resync_seconds=_number(env, "NGM_ROUTING_RESYNC_SECONDS", 300.0, minimum=1, maximum=86_400),
        )

    @property
    def redis_namespace(self) -> str:
        """Instances that share a database share Redis keys; other deployments on the same Redis do not."""
        import hashlib

        return "ngm:" + hashlib.sha256(self.database_url.encode()).hexdigest()[:12]
