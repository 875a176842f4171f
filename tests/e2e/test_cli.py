"""The real `ngm` command as a subprocess: in process against the database, and with --url."""

import json
import os
import stat
import uuid

import pytest

from tests.e2e.conftest import configuration
from tests.support.processes import cli_json, ngm_env, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local_env(tmp_path_factory):
    """An installation of its own on SQLite: `ngm` with no server, as on a fresh machine."""
    d = tmp_path_factory.mktemp("cli-local")
    return ngm_env(d / "data", f"sqlite:///{d / 'ngm.db'}")


def test_bootstrap_key_then_everything_in_process(local_env):
    org = f"org-{uuid.uuid4().hex[:8]}"
    made = cli_json(["keys", "create", "--org", org, "--role", "org_owner", "--name", "first"], local_env)
    assert made["key"].startswith("ngm_") and made["organization_id"] == org and made["role"] == "org_owner"
    key_file = os.path.join(local_env["NGM_DATA_DIR"], "encryption.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600

    env = {**local_env, "NGM_ORG": org}
    gw = cli_json(["gateways", "create", "--name", "cli-gw", "--environment", "staging",
                   "--api-url", "http://127.0.0.1:9", "--gateway-api-key", "-", "--auth-methods", "api_key",
                   "--auth-methods", "jwt", "--jwt-issuer", "https://issuer"], env, input="from-stdin-KEY7\n")
    assert gw["api_key_last4"] == "KEY7" and gw["auth_methods"] == ["api_key", "jwt"]

    table = run_cli(["gateways", "list"], env)
    assert table.returncode == 0
    header, row, footer = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "ENVIRONMENT"] and row.split()[:3] == [gw["id"], "cli-gw", "staging"]
    assert footer == "1 of 1 shown"

    got = run_cli(["gateways", "get", gw["id"]], env)
    assert got.returncode == 0 and "api_key_last4" in got.stdout and "KEY7" in got.stdout
    assert "from-stdin" not in got.stdout

    upd = cli_json(["gateways", "update", gw["id"], "--max-instances", "4", "--clear", "jwt_issuer",
                    "--auth-methods", "api_key"], env)
    assert upd["max_instances"] == 4 and upd["jwt_issuer"] is None and upd["auth_methods"] == ["api_key"]

    # the same key works against the same database when given as --api-key
    as_key = cli_json(["gateways", "list"], {**local_env, "NGM_API_KEY": made["key"]})
    assert as_key["total"] == 1

    deleted = cli_json(["gateways", "delete", gw["id"]], env)
    assert deleted == {"id": gw["id"], "deleted": True}


@pytest.mark.parametrize("args, code, message", [
    (["gateways", "list"], 2, "give --org ORG"),
    (["gateways", "list", "--org", "bad org"], 2, "--org"),
    (["gateways", "get", "nope", "--org", "acme"], 4, "gateway nope not found"),
    (["gateways", "create", "--org", "acme", "--name", "x", "--environment", "staging", "--api-url", "ftp://x"],
     2, "api_url: must be an http:// or https:// URL"),
    (["gateways", "create", "--org", "acme", "--environment", "staging"], 2, "name: is required"),
    (["gateways", "create", "--org", "acme", "--environment", "moon"], 2, "Invalid value for '--environment'"),
    (["gateways", "list", "--api-key", "ngm_" + "x" * 43], 3, "invalid or revoked API key"),
])
def test_errors_exit_non_zero_with_a_clear_message(local_env, args, code, message):
    result = run_cli(args, local_env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and result.stdout == ""


def test_remote_mode_talks_to_the_server(deployment):
    org, key = deployment.new_org()
    gw = json.loads(deployment.cli(["gateways", "create", "--name", "remote", "--environment", "production",
                                    "--api-url", "http://127.0.0.1:9", "--json"], key).stdout)
    assert gw["organization_id"] == org
    listed = deployment.cli(["gateways", "list", "--environment", "production", "--json"], key)
    assert json.loads(listed.stdout)["items"][0]["id"] == gw["id"]
    with deployment.client(key) as client:
        assert client.get(f"/api/v1/gateways/{gw['id']}").json()["name"] == "remote"


@pytest.mark.parametrize("role, code", [("org_viewer", 3)])
def test_remote_role_errors_map_to_exit_codes(deployment, role, code):
    org, owner_key = deployment.new_org()
    viewer = deployment.key(org, role)
    result = deployment.cli(["gateways", "create", "--name", "x", "--environment", "staging",
                             "--api-url", "http://x"], viewer)
    assert result.returncode == code and "needs role org_admin" in result.stderr


def test_remote_conflict_and_not_found_exit_codes(deployment):
    _, key = deployment.new_org()
    args = ["gateways", "create", "--name", "dup", "--environment", "staging", "--api-url", "http://x"]
    assert deployment.cli(args, key).returncode == 0
    dup = deployment.cli(args, key)
    assert dup.returncode == 5 and "already exists" in dup.stderr
    missing = deployment.cli(["gateways", "delete", "nope"], key)
    assert missing.returncode == 4


def test_unreachable_server_exit_code(local_env):
    result = run_cli(["gateways", "list", "--url", "http://127.0.0.1:9", "--api-key", "k"], local_env)
    assert result.returncode == 6 and "cannot reach" in result.stderr


def test_help_lists_every_resource_and_action():
    result = run_cli(["--help"], dict(os.environ))
    assert result.returncode == 0 and "gateways" in result.stdout and "keys" in result.stdout
    actions = run_cli(["gateways", "--help"], dict(os.environ)).stdout
    for action in ("create", "list", "get", "update", "delete", "check", "resolve"):
        assert f"  {action} " in actions


def test_another_organization_cannot_see_or_change_a_gateway(deployment):
    _, key_a = deployment.new_org()
    _, key_b = deployment.new_org()
    with deployment.client(key_a) as a:
        gw = a.post("/api/v1/gateways", json={"name": "mine", "environment": "staging", "api_url": "http://x"}).json()
    for args in (["gateways", "get", gw["id"]], ["gateways", "update", gw["id"], "--description", "pwned"],
                 ["gateways", "delete", gw["id"], "--force"]):
        result = deployment.cli(args, key_b)
        assert result.returncode == 4 and "not found" in result.stderr, args
    local = deployment.cli(["gateways", "get", gw["id"], "--org", "someone-else"], remote=False)
    assert local.returncode == 4
    with deployment.client(key_a) as a:
        assert configuration(a.get(f"/api/v1/gateways/{gw['id']}").json()) == configuration(gw)
