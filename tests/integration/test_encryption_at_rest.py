"""Starting with keys that cannot read stored data fails clearly; rotation re-encrypts under the newest key."""

import asyncio
import json
import uuid

import pytest
from cryptography.fernet import Fernet

from ngm.config import Settings
from ngm.context import AppContext
from ngm.models.database import open_database
from ngm.models.query import select, select_one, update
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
    db = await open_database(url)
    try:
        rows = await select(db, "Gateway", {"api_key_encrypted": ("<>", None)})
        return sorted(r["api_key_encrypted"] for r in rows)
    finally:
        await db.close()


async def test_start_with_a_key_that_cannot_decrypt_fails_without_touching_data(fresh_url, tmp_path):
    original = Fernet.generate_key().decode()
    await store_gateways(settings_for(fresh_url, tmp_path, [original]))
    before = await tokens(fresh_url)
    with pytest.raises(KeyringError) as info:
        await AppContext.open(settings_for(fresh_url, tmp_path, [Fernet.generate_key().decode()]))
    message = str(info.value)
    assert "cannot decrypt 3 of 3 stored secrets (gateway API keys: 3)" in message and "refusing to start" in message
    assert original not in message
    assert await tokens(fresh_url) == before
    # with the old key back (after a new one) it starts again
    ctx = await AppContext.open(settings_for(fresh_url, tmp_path, [Fernet.generate_key().decode(), original]))
    await ctx.close()


async def test_a_lost_key_file_is_not_silently_replaced(fresh_url, tmp_path):
    settings = settings_for(fresh_url, tmp_path)
    await store_gateways(settings)
    settings.encryption_key_file.unlink()
    with pytest.raises(KeyringError, match="key file .* is missing, and the database holds encrypted secrets"):
        await AppContext.open(settings)
    assert not settings.encryption_key_file.exists()  # no new key written to be refused next


async def test_rotation_with_environment_keys(fresh_url, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await store_gateways(settings_for(fresh_url, tmp_path, [old]))
    result = await rotate_encryption(settings_for(fresh_url, tmp_path, [new, old]))
    assert result == {"source": "NGM_ENCRYPTION_KEYS", "reencrypted": 3, "keys": 2, "left_under_other_keys": 0}
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
        rows = await select(running.database, "Gateway", {"organization_id": principal.organization_id,
                                                          "api_key_encrypted": ("<>", None)})
        assert sorted(running.keyring.decrypt(r["api_key_encrypted"]) for r in rows) == [
            "secret-0", "secret-1", "secret-2"]
        running.keyring.RELOAD_CHECK_SECONDS = 0
        made = await Executor(running).run("gateways_create", principal, {
            "name": "after", "environment": "staging", "api_url": "http://x", "api_key": "made-after"})
        row = await select_one(running.database, "Gateway", {"id": made["id"]})
        assert Keyring(new_keys).decrypt(row["api_key_encrypted"]) == "made-after"
    finally:
        await running.close()


async def store_webhooks(settings, n=2):
    ctx = await AppContext.open(settings)
    try:
        p = Principal("hooks-" + uuid.uuid4().hex[:6], "org_owner", "k")
        return p, [await Executor(ctx).run("webhooks_create", p, {"url": f"http://127.0.0.1:9/{i}"})
                   for i in range(n)]
    finally:
        await ctx.close()


async def webhook_tokens(url):
    db = await open_database(url, create=False)
    try:
        return {r["id"]: r["secret_encrypted"] for r in await select(db, "Webhook")}
    finally:
        await db.close()


async def test_rotation_and_pruning_cover_webhook_secrets(fresh_url, tmp_path):
    settings = settings_for(fresh_url, tmp_path)
    await store_gateways(settings, n=1)
    _, hooks = await store_webhooks(settings)
    result = await rotate_encryption(settings, prune=True, settle_seconds=0)
    assert result["reencrypted"] == 3 and result["keys"] == 1 and result["left_under_other_keys"] == 0
    [new_key] = read_key_file(settings.encryption_key_file)
    secrets = await webhook_tokens(fresh_url)
    assert sorted(Keyring([new_key]).decrypt(secrets[h["id"]]) for h in hooks) == sorted(h["secret"] for h in hooks)
    ctx = await AppContext.open(settings)  # the pruned file alone reads everything stored
    await ctx.close()


async def test_pruning_refuses_while_a_secret_needs_another_key(fresh_url, tmp_path):
    settings = settings_for(fresh_url, tmp_path)
    _, [hook] = await store_webhooks(settings, n=1)
    db = await open_database(fresh_url, create=False)
    try:  # a secret written under a key the file never held (another instance's, say)
        await update(db, "Webhook", hook["id"], {"secret_encrypted": Fernet(Fernet.generate_key()).encrypt(b"x")
                                                 .decode()})
    finally:
        await db.close()
    before = read_key_file(settings.encryption_key_file)
    with pytest.raises(KeyringError, match="not pruned: 1 stored secret.*webhook signing secrets: 1"):
        await rotate_encryption(settings, prune=True, settle_seconds=0)
    after = read_key_file(settings.encryption_key_file)
    assert len(after) == 2 and after[1:] == before  # the new key first, every old one kept


async def test_start_refuses_keys_that_cannot_read_webhook_secrets(fresh_url, tmp_path):
    original = Fernet.generate_key().decode()
    await store_webhooks(settings_for(fresh_url, tmp_path, [original]))  # webhooks only, no gateway key
    with pytest.raises(KeyringError, match=r"cannot decrypt 2 of 2 stored secrets \(webhook signing secrets: 2\)"):
        await AppContext.open(settings_for(fresh_url, tmp_path, [Fernet.generate_key().decode()]))


async def test_a_delivery_whose_secret_cannot_be_decrypted_fails_with_that_reason(fresh_url, tmp_path):
    from ngm.nodes.events.dispatcher import WebhookDispatcher

    settings = settings_for(fresh_url, tmp_path)
    principal, [hook] = await store_webhooks(settings, n=1)
    ctx = await AppContext.open(settings)
    try:
        await Executor(ctx).run("webhooks_test", principal, None, hook["id"])
        stranger = Keyring([Fernet.generate_key().decode()])  # as if the key were lost after the start
        dispatcher = WebhookDispatcher(ctx.database, stranger, ctx.outbound)
        assert await dispatcher.run_once() == 1  # returns: no exception, so no restart loop
        [d] = (await Executor(ctx).run("webhooks_deliveries", principal, {}, hook["id"]))["items"]
        assert d["status"] == "failed" and "cannot be decrypted" in d["last_error"] and d["attempts"] == 1
        assert await dispatcher.run_once() == 0
    finally:
        await ctx.close()


async def test_two_rotations_at_once_lose_no_key(fresh_url, tmp_path):
    """Each rotation holds a lock beside the key file: the second starts from the first one's file, so every
    secret stays readable by the keys the file ends with."""
    import subprocess

    import anyio

    from tests.support.processes import NGM, ngm_env

    settings = settings_for(fresh_url, tmp_path)
    await store_gateways(settings, n=2)
    await store_webhooks(settings, n=1)
    env = ngm_env(tmp_path / "data", fresh_url)
    runs = [subprocess.Popen([NGM, "keys", "rotate-encryption", "--json"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [await anyio.to_thread.run_sync(lambda run=run: run.communicate(timeout=120)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    results = [json.loads(out) for out in outputs]
    assert sorted(r["keys"] for r in results) == [2, 3]  # the second kept the first one's new key
    assert {r["left_under_other_keys"] for r in results} == {0}
    assert len(read_key_file(settings.encryption_key_file)) == 3
    ctx = await AppContext.open(settings)  # the start-up check reads every stored secret with the file's keys
    await ctx.close()


@pytest.mark.postgres
async def test_a_key_sealed_before_a_wait_is_sealed_again_after_a_prune(backend, fresh_url, tmp_path):
    """A gateway key written while its row is locked elsewhere waits, sealed under the key of that moment; a
    rotation with --prune meanwhile removes that key. The write seals it again under the newest key."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers from the start of the transaction: nothing is sealed before a wait")
    import psycopg2

    settings = settings_for(fresh_url, tmp_path)
    principal = await store_gateways(settings, n=1)
    ctx = await AppContext.open(settings)
    try:
        gw = await Executor(ctx).run("gateways_create", principal, {"name": "later", "environment": "staging",
                                                                   "api_url": "http://127.0.0.1:9"})
        holder = psycopg2.connect(fresh_url)
        with holder.cursor() as cur:  # another transaction holds the row
            cur.execute("SELECT id FROM gateways WHERE id = %s FOR UPDATE", (gw["id"],))
        write = asyncio.create_task(Executor(ctx).run("gateways_update", principal, {"api_key": "sealed-early-1"},
                                                      gw["id"]))
        await asyncio.sleep(0.5)  # sealed, now waiting for the row
        assert not write.done()
        await rotate_encryption(settings, prune=True, settle_seconds=0.1)
        holder.commit()
        holder.close()
        await write
        [only_key] = read_key_file(settings.encryption_key_file)
        row = await select_one(ctx.database, "Gateway", {"id": gw["id"]})
        assert Keyring([only_key]).decrypt(row["api_key_encrypted"]) == "sealed-early-1"
    finally:
        await ctx.close()
