"""Fernet keyring for the secrets stored at rest (gateway API keys, webhook signing secrets).

Keys come from NGM_ENCRYPTION_KEYS (comma-separated) or, when that is unset, from a key file (one key a
line, newest first) that is created once with mode 0600. The first key encrypts; every key decrypts.
A file-backed keyring notices when the file changes (after `ngm keys rotate-encryption`) and reloads,
so running servers pick up a new key without a restart.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ngm.errors import NgmError

log = logging.getLogger("ngm.secrets")


class KeyringError(NgmError):
    """The configured keys are unusable or cannot decrypt stored data. Never carries key material."""

    code = "encryption_key_error"


def _parse_keys(raw: list[str], origin: str) -> list[Fernet]:
    fernets = []
    for i, key in enumerate(raw, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except (ValueError, TypeError):
            raise KeyringError(
                f"{origin}: key {i} is not a valid Fernet key (32 url-safe base64-encoded bytes); generate one "
                "with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
            ) from None
    if not fernets:
        raise KeyringError(f"{origin}: no encryption key found")
    return fernets


def read_key_file(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def write_key_file(path: Path, keys: list[str], *, exclusive: bool = False) -> None:
    """Write atomically with mode 0600. exclusive=True fails if the file exists (first start races)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ngm-key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# ngm encryption keys: the first encrypts, all decrypt. Keep this file secret.\n")
            fh.write("\n".join(keys) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic: fails with FileExistsError when another process won the race
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Keyring:
    RELOAD_CHECK_SECONDS = 1.0

    def __init__(self, keys: list[str], *, key_file: Path | None = None, origin: str = "keyring",
                 mtime: int | None = None):
        """mtime: the key file's, taken before `keys` were read from it (a change after the read then shows)."""
        self._origin = origin
        self._key_file = key_file
        self._lock = threading.Lock()
        self._install(keys)
        self._mtime = mtime if mtime is not None or key_file is None else key_file.stat().st_mtime_ns
        self._checked_at = time.monotonic()

    def _install(self, keys: list[str]) -> None:
        fernets = _parse_keys(keys, self._origin)
        previous = getattr(self, "_fernet", None)
        if previous is not None:  # what this process sealed a moment ago may be under a key just pruned
            self._retired = previous
        self._fernet = MultiFernet(fernets)
        self._key_count = len(fernets)

    @property
    def key_count(self) -> int:
        return self._key_count

    @property
    def source(self) -> str:
        return self._origin

    def reload_if_changed(self, force: bool = False) -> bool:
        if self._key_file is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked_at < self.RELOAD_CHECK_SECONDS:
            return False
        with self._lock:
            self._checked_at = now
            try:
                mtime = self._key_file.stat().st_mtime_ns
            except FileNotFoundError:
                return False
            if mtime == self._mtime:
                return False
            self._install(read_key_file(self._key_file))
            self._mtime = mtime
            log.info("encryption key file changed; reloaded %d key(s)", self._key_count)
            return True

    def encrypt(self, plaintext: str) -> str:
        self.reload_if_changed()
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            if self.reload_if_changed(force=True):
                return self.decrypt(token)
            raise KeyringError("stored secret cannot be decrypted with the configured encryption keys") from None

    def can_decrypt(self, token: str) -> bool:
        try:
            self._fernet.decrypt(token.encode())
            return True
        except InvalidToken:
            return False

    def seal_again(self, token: str) -> str:
        """The secret under the newest key as of now (the key file read again first): for a secret sealed before
        a wait (a row lock, say) during which a rotation may have put a new key first and pruned the old."""
        self.reload_if_changed(force=True)
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            pass
        retired = getattr(self, "_retired", None)
        try:
            plain = retired.decrypt(token.encode()) if retired is not None else None
        except InvalidToken:
            plain = None
        if plain is None:
            raise KeyringError("stored secret cannot be decrypted with the configured encryption keys")
        return self._fernet.encrypt(plain).decode()

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key (MultiFernet.rotate keeps the original timestamp)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise KeyringError("stored secret cannot be decrypted with the configured encryption keys") from None


def load_keyring(env_keys: tuple[str, ...], key_file: Path | None, *, create: bool = True) -> Keyring:
    """Keys from the environment win; otherwise the key file, created once when `create` is set."""
    if env_keys:
        return Keyring(list(env_keys), origin="NGM_ENCRYPTION_KEYS")
    if key_file is None:
        raise KeyringError("no encryption key configured: set NGM_ENCRYPTION_KEYS or NGM_ENCRYPTION_KEY_FILE")
    if not key_file.exists():
        if not create:
            raise KeyringError(f"encryption key file {key_file} does not exist")
        try:
            write_key_file(key_file, [Fernet.generate_key().decode()], exclusive=True)
            log.warning("created encryption key file %s (mode 0600); back it up: without it stored secrets "
                        "(gateway keys, webhook signing secrets) cannot be decrypted", key_file)
        except FileExistsError:
            pass  # another process created it first; use theirs
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        log.warning("encryption key file %s is readable by group or others (mode %o); chmod 600 it", key_file, mode)
    mtime = key_file.stat().st_mtime_ns
    return Keyring(read_key_file(key_file), key_file=key_file, origin=f"key file {key_file}", mtime=mtime)


def generate_key() -> str:
    return Fernet.generate_key().decode()
