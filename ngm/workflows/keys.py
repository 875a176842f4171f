"""Operations on callers' API keys (bootstrap the first with `ngm keys create --org ORG --role org_owner`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ngm.workflows.build import audited, chain
from ngm.workflows.registry import CliSpec, operation

Role = Literal["org_owner", "org_admin", "org_member", "org_viewer"]
_NODES = ["ngm.nodes.auth.nodes", "ngm.nodes.audit.nodes"]
_CLI = CliSpec(columns=("id", "name", "role", "key_prefix", "created_at", "last_used_at", "revoked"))


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: Optional[str] = Field(None, min_length=1, max_length=200, description="defaults to the role")


class KeyListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_revoked: bool = False


class KeyOut(BaseModel):
    id: str
    organization_id: str
    name: str
    role: Role
    key_prefix: str
    created_by: Optional[str]
    created_at: str
    last_used_at: Optional[str]
    revoked_at: Optional[str]
    revoked: bool


class KeyCreated(KeyOut):
    key: str = Field(description="the API key itself: shown this once, store it now")


class KeyList(BaseModel):
    items: list[KeyOut]


operation(
    resource="keys", action="create", summary="Create an API key",
    description="Create a key bound to the caller's organization, with a role no stronger than the caller's. "
                "The key is returned once.",
    role="org_admin", method="POST", path="/keys", status_code=201,
    input_model=KeyCreate, output_model=KeyCreated,
    cli=CliSpec(columns=("id", "name", "role", "key")),
    build_workflow=lambda: audited(_NODES, ("CreateApiKeyNode", "create", {}), "api_key.create"),
    result=("create", "created"),
)

operation(
    resource="keys", action="list", summary="List API keys",
    role="org_admin", method="GET", path="/keys",
    input_model=KeyListQuery, output_model=KeyList, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("ListApiKeysNode", "list", {})]),
    result=("list", "keys"),
)

operation(
    resource="keys", action="revoke", summary="Revoke an API key",
    description="The key stops working at once on this instance and within the auth cache TTL (2 s) elsewhere.",
    role="org_admin", method="DELETE", path="/keys/{key_id}", id_param="key_id",
    output_model=KeyOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("RevokeApiKeyNode", "revoke", {}), "api_key.revoke"),
    result=("revoke", "revoked"),
)
