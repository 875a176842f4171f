"""Starting with keys that cannot read stored data fails clearly; rotation re-encrypts under the newest key."""

import uuid

import pytest
from cryptography.fernet import Fernet

from ngm.config import Settings
from ngm.context import AppContext
from ngm.nodes.auth.keys import Principal
from ngm.nodes.secrets.keyring import Keyring, KeyringError, read_key_file
from ngm.nodes.secrets.rotation import rotate_encryption
from ngm.workflows.executor import Executor

pytestmark = pytest.mark.anyio


@pytest.fixture
def fresh_url(backend, tmp_path, pg_database_factory):
    return f"sqlite:///{tmp_path / 'rot.db'}" if backend == "sqlite" else pg_database_factory()


def settings_for(url, tmp_path, keys=()):
    env = {"NGM_DATA_DIR": str(tmp_path / "data"), "NGM_DATABASE_URL": url}
    if keys:
        env["NGM_ENCRYPTION_KEYS"] = ",".join(keys)
    return Settings.from_env(env)


async def store_gateways(settings, n=3):
    ctx = await AppContext.open(settings)
    try:
        p = Principal("rot-" + uuid.uuid4().hex[:6], "org_owner", "k")
        for i in range(n):
            await Executor(ctx).run("gateways_create", p, {"name": f"g{i}", "environment": "staging",
                                                           "api_url": "http://x", "api_key": f"secret-{i}"})
        await Executor(ctx).run("gateways_create", p, {"name": "no-key", "environment": "staging",
                                                       "api_url": "http://x"})
        return p
    finally:
        await ctx.close()


async def tokens(url):
    from ngm.models.database import open_database

    db = await open_database(url)
    try:
        rows = await db.express.list("Gateway", filter={"api_key_encrypted": {"$ne": None}}, limit=100)
        return sorted(r["api_key_encrypted"] for r in rows)
    finally:
        await db.close_async()


async def test_start_with_a_key_that_cannot_decrypt_fails_without_touching_data(fresh_url, tmp_path):
    original = Fernet.generate_key().decode()
    await store_gateways(settings_for(fresh_url, tmp_path, [original]))
    before = await tokens(fresh_url)
    with pytest.raises(KeyringError) as info:
        await AppContext.open(settings_for(fresh_url, tmp_path, [Fernet.generate_key().decode()]))
    message = str(info.value)
    assert "cannot decrypt 3 of 3 stored gateway API keys" in message and "refusing to start" in message
    assert original not in message
    assert await tokens(fresh_url) == before
    # with the old key back (after a new one) it starts again
    ctx = await AppContext.open(settings_for(fresh_url, tmp_path, [Fernet.generate_key().decode(), original]))
    await ctx.close()


async def test_a_lost_key_file_is_not_silently_replaced(fresh_url, tmp_path):
    settings = settings_for(fresh_url, tmp_path)
    await store_gateways(settings)
    settings.encryption_key_file.unlink()
    with pytest.raises(KeyringError, match="cannot decrypt 3 of 3"):
        await AppContext.open(settings)


async def test_rotation_with_environment_keys(fresh_url, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await store_gateways(settings_for(fresh_url, tmp_path, [old]))
    result = await rotate_encryption(settings_for(fresh_url, tmp_path, [new, old]))
    assert result == {"source": "NGM_ENCRYPTION_KEYS", "reencrypted": 3, "keys": 2}
    assert sorted(Keyring([new]).decrypt(t) for t in await tokens(fresh_url)) == ["secret-0", "secret-1", "secret-2"]
    # the old key can now be dropped
    ctx = await AppContext.open(settings_for(fresh_url, tmp_path, [new]))
    await ctx.close()
    # running it again has nothing left to do
    assert (await rotate_encryption(settings_for(fresh_url, tmp_path, [new])))["reencrypted"] == 0


async def test_rotation_with_the_key_file_keeps_a_running_instance_working(fresh_url, tmp_path):
    settings = settings_for(fresh_url, tmp_path)
    principal = await store_gateways(settings)
    running = await AppContext.open(settings)  # an instance that keeps running through the rotation
    try:
        old_keys = read_key_file(settings.encryption_key_file)
        result = await rotate_encryption(settings, prune=True, settle_seconds=0.1)
        assert result["reencrypted"] == 3 and result["keys"] == 1
        new_keys = read_key_file(settings.encryption_key_file)
        assert len(new_keys) == 1 and new_keys[0] not in old_keys
        assert sorted(Keyring(new_keys).decrypt(t) for t in await tokens(fresh_url)) == [
            "secret-0", "secret-1", "secret-2"]
        # the running instance reads the re-encrypted keys and writes new ones under the new key
        rows = await running.db.express.list("Gateway", filter={"organization_id": principal.organization_id,
                                                                "api_key_encrypted": {"$ne": None}}, limit=10)
        assert sorted(running.keyring.decrypt(r["api_key_encrypted"]) for r in rows) == [
            "secret-0", "secret-1", "secret-2"]
        running.keyring.RELOAD_CHECK_SECONDS = 0
        made = await Executor(running).run("gateways_create", principal, {
            "name": "after", "environment": "staging", "api_url": "http://x", "api_key": "made-after"})
        row = await running.db.express.read("Gateway", made["id"])
        assert Keyring(new_keys).decrypt(row["api_key_encrypted"]) == "made-after"
    finally:
        await running.close()
