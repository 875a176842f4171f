"""Every encrypted column, and the start-up rule: refuse to start with keys that cannot read what is stored,
rather than lose it.

ENCRYPTED_COLUMNS is the one list of what is stored under the encryption keys: the start-up check, key
rotation and pruning all walk it, so a secret added to a model is covered by adding it here (a test holds
the list to the models: every column named *_encrypted is in it).
"""

from __future__ import annotations

import logging
from typing import AsyncIterator

from ngm.config import Settings
from ngm.models import TABLES
from ngm.models.database import Queries
from ngm.nodes.secrets.keyring import Keyring, KeyringError, load_keyring

log = logging.getLogger("ngm.secrets")
ENCRYPTED_COLUMNS: tuple[tuple[str, str], ...] = (("Gateway", "api_key_encrypted"), ("Webhook", "secret_encrypted"))
LABELS = {("Gateway", "api_key_encrypted"): "gateway API keys",
          ("Webhook", "secret_encrypted"): "webhook signing secrets"}
_PAGE = 1000


async def stored_secrets(q: Queries) -> AsyncIterator[tuple[str, str, str, str]]:
    """Yield (model, column, row id, token) for every stored secret, a page at a time."""
    for model, column in ENCRYPTED_COLUMNS:
        table = TABLES[model].name
        after = ""
        while True:
            rows = await q.rows(f"SELECT id, {column} AS token FROM {table} WHERE {column} IS NOT NULL "
                                "AND id > :after ORDER BY id LIMIT :page", {"after": after, "page": _PAGE})
            for row in rows:
                yield model, column, row["id"], row["token"]
            if len(rows) < _PAGE:
                break
            after = rows[-1]["id"]


async def count_unreadable(q: Queries, keyring: Keyring) -> tuple[int, int, dict[str, int]]:
    """(secrets checked, secrets the keyring cannot decrypt, unreadable per column)."""
    checked = failed = 0
    per_column: dict[str, int] = {}
    async for model, column, _, token in stored_secrets(q):
        checked += 1
        if not keyring.can_decrypt(token):
            failed += 1
            name = LABELS.get((model, column), f"{TABLES[model].name}.{column}")
            per_column[name] = per_column.get(name, 0) + 1
    return checked, failed, per_column


async def holds_secrets(q: Queries) -> bool:
    async for _ in stored_secrets(q):
        return True
    return False


async def verify_stored_secrets(q: Queries, keyring: Keyring) -> int:
    checked, failed, per_column = await count_unreadable(q, keyring)
    if failed:
        where = ", ".join(f"{label}: {n}" for label, n in sorted(per_column.items()))
        raise KeyringError(
            f"the configured encryption keys ({keyring.source}) cannot decrypt {failed} of {checked} stored "
            f"secrets ({where}). Start with the key that encrypted them (put it in NGM_ENCRYPTION_KEYS, after "
            "any new key) — refusing to start so that no stored secret is lost."
        )
    return checked


async def open_keyring(q: Queries, settings: Settings, *, create: bool = True) -> Keyring:
    """The configured keyring, checked against what is stored. A missing key file is created only for a
    database that holds no secret yet: for one that does, the key that encrypted them is what is missing."""
    key_file = settings.encryption_key_file
    if not settings.encryption_keys and key_file is not None and not key_file.exists() and create:
        if await holds_secrets(q):
            raise KeyringError(
                f"the encryption key file {key_file} is missing, and the database holds encrypted secrets: "
                "restore the key file (or set NGM_ENCRYPTION_KEYS to the key that encrypted them). Nothing "
                "was created.")
    keyring = load_keyring(settings.encryption_keys, key_file, create=create)
    await verify_stored_secrets(q, keyring)
    return keyring
