import pytest

from ngm.nodes.auth.keys import (
    ROLES,
    Principal,
    check_org_id,
    display_prefix,
    generate_api_key,
    hash_api_key,
    looks_like_api_key,
    role_at_least,
)


@pytest.mark.parametrize("role, required, allowed", [
    ("org_owner", "org_admin", True), ("org_admin", "org_admin", True), ("org_member", "org_admin", False),
    ("org_viewer", "org_viewer", True), ("org_viewer", "org_member", False), ("org_member", "org_viewer", True),
    ("superuser", "org_viewer", False),
])
def test_role_order(role, required, allowed):
    assert role_at_least(role, required) is allowed
    assert Principal("o", role, "k").allows(required) is allowed


def test_roles_weakest_first():
    assert ROLES == ("org_viewer", "org_member", "org_admin", "org_owner")


def test_generated_keys_are_unique_well_formed_and_hashed():
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert looks_like_api_key(key)
        assert len(hash_api_key(key)) == 64 and key not in hash_api_key(key)
        assert display_prefix(key) == key[:10]


@pytest.mark.parametrize("value", ["", "ngm_short", "Bearer ngm_x", "ngm_" + "a" * 42 + "!"])
def test_malformed_keys_are_recognised(value):
    assert not looks_like_api_key(value)


@pytest.mark.parametrize("org", ["acme", "Acme-Corp_2", "a.b"])
def test_valid_org_ids(org):
    assert check_org_id(org) == org


@pytest.mark.parametrize("org", ["", "-acme", "acme corp", "x" * 65, "ac/me"])
def test_invalid_org_ids(org):
    with pytest.raises(ValueError):
        check_org_id(org)
