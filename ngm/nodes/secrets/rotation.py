"""`ngm keys rotate-encryption`: re-encrypt every stored gateway key under the newest encryption key.

With NGM_ENCRYPTION_KEYS the newest key is the first one: roll it out to every instance as "new,old",
run this, then drop "old". With the key file, a new key is generated and put first; running servers
notice the file change within a second and decrypt with either key meanwhile, so nothing stops.
`prune` then removes the old keys from the file once no stored key needs them.
"""

from __future__ import annotations

import asyncio

from ngm.config import Settings
from ngm.nodes.secrets.keyring import Keyring, KeyringError, generate_key, load_keyring, read_key_file, write_key_file
from ngm.nodes.secrets.verify import stored_secrets


async def _reencrypt_all(db, keyring: Keyring, newest: Keyring) -> int:
    """Re-encrypt each token that the newest key alone cannot read. Returns how many changed."""
    changed = 0
    async for gateway_id, token in stored_secrets(db):
        if newest.can_decrypt(token):
            continue
        rotated = keyring.rotate(token)
        current = await db.express.read("Gateway", gateway_id)
        if current and current.get("api_key_encrypted") == token:  # skip if someone set a new key meanwhile
            await db.express.update("Gateway", gateway_id, {"api_key_encrypted": rotated})
            changed += 1
    return changed


async def rotate_encryption(settings: Settings, prune: bool = False, settle_seconds: float = 2.0) -> dict:
    from ngm.models.database import open_database

    if settings.encryption_keys:
        if prune:
            raise KeyringError("--prune applies to the key file; with NGM_ENCRYPTION_KEYS remove old keys yourself")
        keyring = load_keyring(settings.encryption_keys, None)
        newest = Keyring([settings.encryption_keys[0]], origin="newest key")
        db = await open_database(settings.database_url)
        try:
            return {"source": "NGM_ENCRYPTION_KEYS", "reencrypted": await _reencrypt_all(db, keyring, newest),
                    "keys": keyring.key_count}
        finally:
            await db.close_async()

    path = settings.encryption_key_file
    if path is None or not path.exists():
        raise KeyringError(f"no encryption key file at {path}: nothing to rotate")
    old = read_key_file(path)
    new_key = generate_key()
    db = await open_database(settings.database_url)
    try:
        keyring = Keyring([new_key, *old], origin=f"key file {path}")
        newest = Keyring([new_key], origin="newest key")
        write_key_file(path, [new_key, *old])
        await asyncio.sleep(settle_seconds)  # running servers reload the file and start encrypting with it
        count = await _reencrypt_all(db, keyring, newest)
        if prune:
            count += await _reencrypt_all(db, keyring, newest)  # anything written with the old key meanwhile
            write_key_file(path, [new_key])
        return {"source": f"key file {path}", "reencrypted": count, "keys": 1 if prune else 1 + len(old)}
    finally:
        await db.close_async()
