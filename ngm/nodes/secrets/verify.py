"""Refuse to start with keys that cannot read what is stored, rather than lose it."""

from __future__ import annotations

from ngm.nodes.secrets.keyring import Keyring, KeyringError

_PAGE = 1000


async def stored_secrets(db):
    """Yield (gateway id, token) for every stored gateway key, a page at a time."""
    offset = 0
    while True:
        rows = await db.express.list("Gateway", filter={"api_key_encrypted": {"$ne": None}},
                                     order_by=["id"], limit=_PAGE, offset=offset)
        for row in rows:
            yield row["id"], row["api_key_encrypted"]
        if len(rows) < _PAGE:
            return
        offset += _PAGE


async def verify_stored_secrets(db, keyring: Keyring) -> int:
    checked = failed = 0
    async for _, token in stored_secrets(db):
        checked += 1
        if not keyring.can_decrypt(token):
            failed += 1
    if failed:
        raise KeyringError(
            f"the configured encryption keys ({keyring.source}) cannot decrypt {failed} of {checked} stored "
            "gateway API keys. Start with the key that encrypted them (put it in NGM_ENCRYPTION_KEYS, after "
            "any new key) — refusing to start so that no stored key is lost."
        )
    return checked
