"""What every node and channel needs at run time: settings, database, keyring, HTTP client.

One AppContext per process (tests may open several). The executor binds it to a ContextVar around each
workflow execution, so Kailash nodes reach it without passing live objects through workflow inputs.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import Any

from ngm.config import Settings

log = logging.getLogger("ngm.context")
_current: contextvars.ContextVar["AppContext"] = contextvars.ContextVar("ngm_app_context")


def current() -> "AppContext":
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no AppContext bound: run nodes through ngm.workflows.executor") from None


def bind(ctx: "AppContext"):
    return _current.set(ctx)


def unbind(token) -> None:
    _current.reset(token)


@dataclass
class AppContext:
    settings: Settings
    db: Any
    keyring: Any
    http: Any  # httpx.AsyncClient for probes to gateways
    extras: dict = field(default_factory=dict)
    _runtime: Any = None
    _auth: Any = None

    @classmethod
    async def open(cls, settings: Settings, *, create_key_file: bool = True) -> "AppContext":
        import httpx

        from ngm.models.database import open_database
        from ngm.nodes.secrets.keyring import load_keyring
        from ngm.nodes.secrets.verify import verify_stored_secrets

        keyring = load_keyring(settings.encryption_keys, settings.encryption_key_file, create=create_key_file)
        db = await open_database(settings.database_url)
        try:
            await verify_stored_secrets(db, keyring)
        except Exception:
            await db.close_async()
            raise
        http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return cls(settings=settings, db=db, keyring=keyring, http=http)

    @property
    def runtime(self):
        if self._runtime is None:
            from kailash.runtime.async_local import AsyncLocalRuntime

            self._runtime = AsyncLocalRuntime()
        return self._runtime

    @property
    def auth(self):
        if self._auth is None:
            from ngm.nodes.auth.store import KeyAuthenticator

            self._auth = KeyAuthenticator(self.db, ttl=self.settings.auth_cache_seconds)
        return self._auth

    async def close(self) -> None:
        await self.http.aclose()
        if self._runtime is not None:
            self._runtime.close()
        await self.db.close_async()
