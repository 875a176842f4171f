"""Typed settings read once from the environment (the public interface names them in DESIGN.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Settings:
    data_dir: Path
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
    webhook_max_attempts: int = 8
    api_rate_limit: int = 3000  # management API requests per key per minute; 0 = unlimited
    trusted_proxies: str = ""  # CIDRs of proxies in front of the router whose X-Forwarded-For is believed
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("NGM_DATA_DIR") or _default_data_dir(env)).expanduser()
        keys = tuple(k.strip() for k in env.get("NGM_ENCRYPTION_KEYS", "").split(",") if k.strip())
        key_file = env.get("NGM_ENCRYPTION_KEY_FILE")
        return cls(
            data_dir=data_dir,
            database_url=env.get("NGM_DATABASE_URL") or f"sqlite:///{data_dir / 'ngm.db'}",
            encryption_keys=keys,
            encryption_key_file=Path(key_file).expanduser() if key_file else data_dir / "encryption.key",
            redis_url=env.get("NGM_REDIS_URL") or None,
            log_level=(env.get("NGM_LOG_LEVEL") or "INFO").upper(),
            auth_cache_seconds=float(env.get("NGM_AUTH_CACHE_SECONDS") or 2.0),
            monitor_enabled=(env.get("NGM_MONITOR") or "on").lower() not in ("0", "off", "false", "no"),
            monitor_concurrency=int(env.get("NGM_MONITOR_CONCURRENCY") or 256),
            monitor_lease_seconds=float(env.get("NGM_MONITOR_LEASE_SECONDS") or 10.0),
            health_history_days=float(env.get("NGM_HEALTH_HISTORY_DAYS") or 7.0),
            outbound_allow=env.get("NGM_OUTBOUND_ALLOW") or "",
            webhook_max_attempts=int(env.get("NGM_WEBHOOK_MAX_ATTEMPTS") or 8),
            api_rate_limit=int(env.get("NGM_API_RATE_LIMIT") or 3000),
            trusted_proxies=_cidrs(env, "NGM_TRUSTED_PROXIES"),
            environ=dict(env),
        )

    @property
    def redis_namespace(self) -> str:
        """Instances that share a database share Redis keys; other deployments on the same Redis do not."""
        import hashlib

        return "ngm:" + hashlib.sha256(self.database_url.encode()).hexdigest()[:12]

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))
