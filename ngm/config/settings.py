"""Typed settings read once from the environment (the public interface names them in DESIGN.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


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
            environ=dict(env),
        )

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))
