"""Operations on callers' API keys (bootstrap the first with `ngm keys create --org ORG --role org_owner`)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field

from ngm.workflows.build import audited, chain
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import Partial, Strict

Role = Literal["org_owner", "org_admin", "org_member", "org_viewer"]
_NODES = ["ngm.nodes.auth.nodes", "ngm.nodes.audit.nodes"]
_CLI = CliSpec(columns=("id", "name", "role", "key_prefix", "created_at", "last_used_at", "revoked"))


_LIMIT = "requests per window for this key on every gateway, overriding per_user_rate_limit; 0 = unlimited"
_API_LIMIT = "management API requests per minute for this key, overriding NGM_API_RATE_LIMIT; 0 = unlimited"
Limit = Annotated[int, Field(ge=0, le=1_000_000_000)]


class KeyCreate(Strict):
    role: Role
    name: Optional[str] = Field(None, min_length=1, max_length=200, description="defaults to the role")
    rate_limit: Optional[Limit] = Field(None, description=_LIMIT)
    api_rate_limit: Optional[Limit] = Field(None, description=_API_LIMIT)


class KeyUpdate(Partial, table="ApiKey"):
    """Partial update: only the fields sent change; null returns a limit to the default."""

    name: Optional[str] = Field(None, min_length=1, max_length=200)
    rate_limit: Optional[Limit] = Field(None, description=_LIMIT)
    api_rate_limit: Optional[Limit] = Field(None, description=_API_LIMIT)


class KeyListQuery(Strict):
    include_revoked: bool = False


class KeyOut(BaseModel):
    id: str
    organization_id: str
    name: str
    role: Role
    key_prefix: str
    rate_limit: Optional[int]
    api_rate_limit: Optional[int]
    created_by: Optional[str]
    created_at: str
    last_used_at: Optional[str]
    revoked_at: Optional[str]
    revoked: bool


class KeyCreated(KeyOut):
    key: str = Field(description="the API key itself: shown this once, store it now")


class KeyList(BaseModel):
    items: list[KeyOut]


class WhoAmI(BaseModel):
    organization_id: str
    key_id: str
    name: str
    role: Role
    can_change: bool = Field(description="the role may change gateways, deployments and routing (org_admin and up)")
    can_check: bool = Field(description="the role may run health checks (org_member and up)")


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
    resource="keys", action="update", summary="Rename an API key or change its rate limits",
    description="Takes effect on every instance within a second.",
    role="org_admin", method="PUT", path="/keys/{key_id}", id_param="key_id", partial=True,
    input_model=KeyUpdate, output_model=KeyOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("UpdateApiKeyNode", "update", {}), "api_key.update"),
    result=("update", "updated"),
)

operation(
    resource="keys", action="revoke", summary="Revoke an API key",
    description="The key stops working at once on this instance and within the auth cache TTL (2 s) elsewhere.",
    role="org_admin", method="DELETE", path="/keys/{key_id}", id_param="key_id",
    output_model=KeyOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("RevokeApiKeyNode", "revoke", {}), "api_key.revoke"),
    result=("revoke", "revoked"),
)

operation(
    resource="keys", action="whoami", summary="Show the caller's organization and role",
    description="What the presented key is: its organization, id, name and role (the dashboard's sign-in).",
    role="org_viewer", method="GET", path="/keys/me", output_model=WhoAmI,
    cli=CliSpec(columns=("organization_id", "key_id", "name", "role")),
    build_workflow=lambda: chain(_NODES, [("GetCallerKeyNode", "whoami", {})]),
    result=("whoami", "caller"),
)
