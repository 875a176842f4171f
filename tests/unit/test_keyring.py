import os
import stat
import threading

import pytest
from cryptography.fernet import Fernet

from ngm.nodes.secrets.keyring import Keyring, KeyringError, load_keyring, read_key_file, write_key_file
from ngm.nodes.secrets.nodes import seal


def test_first_key_encrypts_and_every_key_decrypts():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token_old = Keyring([old]).encrypt("s3cret")
    ring = Keyring([new, old])
    assert ring.decrypt(token_old) == "s3cret"
    token_new = ring.encrypt("s3cret")
    assert Keyring([new]).decrypt(token_new) == "s3cret"
    with pytest.raises(KeyringError):
        Keyring([old]).decrypt(token_new)


def test_rotate_moves_a_token_to_the_newest_key():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Keyring([old]).encrypt("value")
    rotated = Keyring([new, old]).rotate(token)
    assert Keyring([new]).decrypt(rotated) == "value"


def test_invalid_key_is_reported_by_position_without_echoing_it():
    with pytest.raises(KeyringError) as info:
        Keyring([Fernet.generate_key().decode(), "not-a-key-but-secret-text"], origin="NGM_ENCRYPTION_KEYS")
    assert "key 2 is not a valid Fernet key" in str(info.value)
    assert "secret-text" not in str(info.value)


def test_key_file_is_created_once_with_mode_0600_and_reused(tmp_path):
    path = tmp_path / "sub" / "encryption.key"
    first = load_keyring((), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = first.encrypt("kept")
    second = load_keyring((), path)
    assert second.decrypt(token) == "kept"
    assert len(read_key_file(path)) == 1


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    path = tmp_path / "encryption.key"
    rings, errors = [], []

    def start():
        try:
            rings.append(load_keyring((), path))
        except Exception as exc:  # a thread's exception would otherwise vanish with it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(rings) == 8
    token = rings[0].encrypt("x")
    assert all(r.decrypt(token) == "x" for r in rings) and len(read_key_file(path)) == 1


def test_env_keys_win_over_the_key_file(tmp_path):
    path = tmp_path / "encryption.key"
    env_key = Fernet.generate_key().decode()
    ring = load_keyring((env_key,), path)
    assert not path.exists()
    assert Keyring([env_key]).decrypt(ring.encrypt("x")) == "x"


def test_missing_key_file_without_create_is_an_error(tmp_path):
    with pytest.raises(KeyringError, match="does not exist"):
        load_keyring((), tmp_path / "absent.key", create=False)


def test_file_backed_keyring_reloads_after_rotation(tmp_path):
    path = tmp_path / "encryption.key"
    ring = load_keyring((), path)
    old = read_key_file(path)
    new = Fernet.generate_key().decode()
    write_key_file(path, [new, *old])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    # a token made with the new key is readable at once (decrypt forces a reload on failure) ...
    assert ring.decrypt(Keyring([new]).encrypt("fresh")) == "fresh"
    # ... and new encryptions use the new key
    assert Keyring([new]).decrypt(ring.encrypt("after")) == "after"


def test_seal_replaces_plaintext_with_token_and_last4():
    ring = Keyring([Fernet.generate_key().decode()])
    sealed = seal({"name": "gw", "api_key": "abcdef123456"}, ring)
    assert "api_key" not in sealed
    assert sealed["api_key_last4"] == "3456"
    assert ring.decrypt(sealed["api_key_encrypted"]) == "abcdef123456"
    assert "abcdef" not in sealed["api_key_encrypted"]


@pytest.mark.parametrize("cleared", [None, ""])
def test_seal_clears_the_key(cleared):
    ring = Keyring([Fernet.generate_key().decode()])
    assert seal({"api_key": cleared}, ring) == {"api_key_encrypted": None, "api_key_last4": None}


def test_seal_leaves_records_without_a_key_alone():
    ring = Keyring([Fernet.generate_key().decode()])
    assert seal({"name": "x"}, ring) == {"name": "x"}
