"""`ngm keys rotate-encryption`: re-encrypt every stored secret (every column of ENCRYPTED_COLUMNS: gateway
keys and webhook signing secrets) under the newest encryption key.

With NGM_ENCRYPTION_KEYS the newest key is the first one: roll it out to every instance as "new,old",
run this, then drop "old". With the key file, a new key is generated and put first; running servers
notice the file change within a second and decrypt with either key meanwhile, so nothing stops.
`prune` then removes the old keys from the file, and refuses (changing nothing in the file) while any
stored secret still needs one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os

from ngm.config import Settings
from ngm.models import TABLES
from ngm.models.database import Queries
from ngm.models.query import update
from ngm.nodes.secrets.keyring import Keyring, KeyringError, generate_key, load_keyring, read_key_file, write_key_file
from ngm.nodes.secrets.verify import count_unreadable, stored_secrets


async def _reencrypt_all(database, keyring: Keyring, newest: Keyring) -> int:
    """Re-encrypt each secret that the newest key alone cannot read (and the keyring can: one under a key it
    does not hold is left as it is, and counted by `_still_old`). Returns how many changed."""
    changed = 0
    async for model, column, row_id, token in stored_secrets(database):
        if newest.can_decrypt(token) or not keyring.can_decrypt(token):
            continue
        rotated = keyring.rotate(token)
        async with database.transaction() as tx:
            current = await tx.value(f"SELECT {column} FROM {TABLES[model].name} WHERE id = :id{tx.lock}",
                                     {"id": row_id})
            if current == token:  # skip if someone set a new secret meanwhile
                await update(tx, model, row_id, {column: rotated})
                changed += 1
    return changed


async def _still_old(q: Queries, newest: Keyring) -> dict[str, int]:
    _, failed, per_column = await count_unreadable(q, newest)
    return per_column if failed else {}


async def rotate_encryption(settings: Settings, prune: bool = False, settle_seconds: float = 2.0) -> dict:
    from ngm.models.database import open_database

    if settings.encryption_keys:
        if prune:
            raise KeyringError("--prune applies to the key file; with NGM_ENCRYPTION_KEYS remove old keys yourself")
        keyring = load_keyring(settings.encryption_keys, None)
        newest = Keyring([settings.encryption_keys[0]], origin="newest key")
        database = await open_database(settings.database_url)
        try:
            count = await _reencrypt_all(database, keyring, newest)
            left = await _still_old(database, newest)
            return {"source": "NGM_ENCRYPTION_KEYS", "reencrypted": count, "keys": keyring.key_count,
                    "left_under_other_keys": sum(left.values())}
        finally:
            await database.close()

    path = settings.encryption_key_file
    if path is None or not path.exists():
        raise KeyringError(f"no encryption key file at {path}: nothing to rotate")
    with _rotation_lock(path):  # two rotations at once would each drop the other's new key from the file
        return await _rotate_key_file(settings, path, prune, settle_seconds)


@contextlib.contextmanager
def _rotation_lock(path):
    """An exclusive lock beside the key file, held for the whole rotation; a second rotation waits for it."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _rotate_key_file(settings: Settings, path, prune: bool, settle_seconds: float) -> dict:
    from ngm.models.database import open_database

    old = read_key_file(path)
    new_key = generate_key()
    database = await open_database(settings.database_url)
    try:
        keyring = Keyring([new_key, *old], origin=f"key file {path}")
        newest = Keyring([new_key], origin="newest key")
        write_key_file(path, [new_key, *old])
        await asyncio.sleep(settle_seconds)  # running servers reload the file and start encrypting with it
        count = await _reencrypt_all(database, keyring, newest)
        if prune:
            count += await _reencrypt_all(database, keyring, newest)  # anything written with the old key meanwhile
            left = await _still_old(database, newest)
            if left:
                where = ", ".join(f"{label}: {n}" for label, n in sorted(left.items()))
                raise KeyringError(f"not pruned: {sum(left.values())} stored secret(s) cannot be read with the new "
                                   f"key ({where}); the key file keeps every key. Run the rotation again; a secret "
                                   "under a key the file never held needs that key added first.")
            write_key_file(path, [new_key])
            left = {}
        else:
            left = await _still_old(database, newest)
        return {"source": f"key file {path}", "reencrypted": count, "keys": 1 if prune else 1 + len(old),
                "left_under_other_keys": sum(left.values())}
    finally:
        await database.close()
