"""Callers' API keys: create, list, revoke, authenticate; no escalation past the creator's role."""

import pytest

from ngm.errors import Forbidden, NotFound, Unauthorized
from ngm.models.query import select_one
from ngm.nodes.auth.keys import hash_api_key
from tests.integration.conftest import as_role

pytestmark = pytest.mark.anyio


async def test_created_key_authenticates_as_its_org_and_role(ctx, executor, owner):
    made = await executor.run("keys_create", owner, {"role": "org_member", "name": "ci"})
    assert made["key"].startswith("ngm_") and made["role"] == "org_member" and made["name"] == "ci"
    principal = await ctx.auth.authenticate(made["key"])
    assert (principal.organization_id, principal.role, principal.key_id) == (owner.organization_id, "org_member",
                                                                             made["id"])
    row = await select_one(ctx.database, "ApiKey", {"id": made["id"]})
    assert row["key_hash"] == hash_api_key(made["key"]) and made["key"] not in str(row)


async def test_listing_never_shows_keys_or_hashes(executor, owner):
    made = await executor.run("keys_create", owner, {"role": "org_viewer"})
    listed = await executor.run("keys_list", owner, {})
    assert [k["id"] for k in listed["items"]] == [made["id"]]
    assert "key" not in listed["items"][0] and "key_hash" not in listed["items"][0]
    assert made["key"] not in str(listed)


async def test_revoked_key_stops_working(ctx, executor, owner):
    made = await executor.run("keys_create", owner, {"role": "org_admin"})
    assert (await ctx.auth.authenticate(made["key"])).role == "org_admin"
    revoked = await executor.run("keys_revoke", owner, None, made["id"])
    assert revoked["revoked"] is True and revoked["revoked_at"].endswith("Z")
    with pytest.raises(Unauthorized):
        await ctx.auth.authenticate(made["key"])
    assert (await executor.run("keys_list", owner, {}))["items"] == []
    assert len((await executor.run("keys_list", owner, {"include_revoked": True}))["items"]) == 1


async def test_revocation_reaches_other_instances_within_the_cache_ttl(ctx, executor, owner):
    from ngm.nodes.auth.store import KeyAuthenticator, revoke_key

    other_instance = KeyAuthenticator(ctx.database, ttl=0.2)
    made = await executor.run("keys_create", owner, {"role": "org_viewer"})
    await other_instance.authenticate(made["key"])
    await revoke_key(ctx.database, owner.organization_id, made["id"])
    import anyio

    await anyio.sleep(0.3)
    with pytest.raises(Unauthorized):
        await other_instance.authenticate(made["key"])


async def test_concurrent_requests_of_one_key_share_one_load(ctx, executor, owner):
    import asyncio

    from ngm.nodes.auth.store import KeyAuthenticator

    auth = KeyAuthenticator(ctx.database, ttl=5)
    loads = []
    real_load = auth._load
    auth._load = lambda digest: loads.append(digest) or real_load(digest)
    made = await executor.run("keys_create", owner, {"role": "org_viewer"})
    principals = await asyncio.gather(*(auth.authenticate(made["key"]) for _ in range(20)))
    assert {p.key_id for p in principals} == {made["id"]} and len(loads) == 1


async def test_a_key_in_use_is_re_read_before_it_expires(ctx, executor, owner):
    import time

    import anyio

    from ngm.nodes.auth.store import KeyAuthenticator, revoke_key

    # ttl 3 s: the re-read behind the cache has 1.3 s to land (with 1 s it had 0.35 s, which a loaded
    # PostgreSQL on a shared machine once missed); the claim is the same: refused before the entry expires
    ttl = 3.0
    auth = KeyAuthenticator(ctx.database, ttl=ttl)
    made = await executor.run("keys_create", owner, {"role": "org_viewer"})
    await auth.authenticate(made["key"])
    cached_at = time.monotonic()  # the answer is kept until cached_at + ttl at the earliest
    await revoke_key(ctx.database, owner.organization_id, made["id"])
    await anyio.sleep(0.55 * ttl)  # second half of the ttl: still answered from the cache, and re-read behind it
    assert (await auth.authenticate(made["key"])).key_id == made["id"]
    refused_after = None
    while refused_after is None and time.monotonic() - cached_at < 0.95 * ttl:
        await anyio.sleep(0.01)
        try:
            await auth.authenticate(made["key"])
        except Unauthorized:
            refused_after = time.monotonic() - cached_at
    assert refused_after is not None and refused_after < 0.95 * ttl  # before the entry itself would have expired


@pytest.mark.parametrize("presented", [None, "", "garbage", "ngm_" + "x" * 43])
async def test_bad_keys_are_refused(ctx, presented):
    with pytest.raises(Unauthorized):
        await ctx.auth.authenticate(presented)


async def test_no_key_stronger_than_its_creator(executor, owner):
    admin = as_role(owner, "org_admin")
    with pytest.raises(Forbidden) as info:
        await executor.run("keys_create", admin, {"role": "org_owner"})
    assert info.value.field == "role"
    assert (await executor.run("keys_create", admin, {"role": "org_admin"}))["role"] == "org_admin"
    with pytest.raises(Forbidden):
        await executor.run("keys_create", as_role(owner, "org_member"), {"role": "org_viewer"})


async def test_admin_cannot_revoke_an_owner_key(executor, owner):
    owner_key = await executor.run("keys_create", owner, {"role": "org_owner"})
    with pytest.raises(Forbidden):
        await executor.run("keys_revoke", as_role(owner, "org_admin"), None, owner_key["id"])


async def test_keys_of_another_organization_are_invisible(executor, owner):
    made = await executor.run("keys_create", owner, {"role": "org_viewer"})
    intruder = as_role(owner, "org_owner").__class__("other-" + owner.organization_id, "org_owner", "k")
    with pytest.raises(NotFound):
        await executor.run("keys_revoke", intruder, None, made["id"])
    assert (await executor.run("keys_list", intruder, {}))["items"] == []
