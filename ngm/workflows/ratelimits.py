"""Rate limits of a gateway: what is configured, what is used now, what was refused; and setting them."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import RATE_LIMIT_FIELDS, GatewayOut, RateLimitSettings
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.routing import RouteQuery
from ngm.workflows.schema import ID_PATTERN

_GATEWAY_NODES = ["ngm.nodes.gateways.nodes"]


class Usage(BaseModel):
    limit: int
    used: Optional[int]
    remaining: Optional[int]
    reset_seconds: Optional[int]


class AgentUsage(Usage):
    agent_id: str
    override: bool


class UserUsage(Usage):
    key_id: str
    key_name: str
    override: bool


class RateLimitsOut(BaseModel):
    gateway_id: str
    window_seconds: float
    algorithm: Literal["sliding_window", "token_bucket"]
    burst: int
    configured: dict[str, int]
    gateway: Usage
    agents: list[AgentUsage]
    users: list[UserUsage]
    rejected: dict[str, int]
    limiter: dict


operation(
    resource="ratelimits", action="get", summary="A gateway's rate limits and their current usage",
    description="Configured limits; usage now per scope (the gateway, each agent deployed on it, each caller "
                "seen in the current window); refusals counted per scope. Shared figures with Redis; without "
                "it, this instance's.",
    role="org_viewer", method="GET", path="/gateways/{gateway_id}/rate-limits", id_param="gateway_id",
    output_model=RateLimitsOut,
    cli=CliSpec(columns=("gateway_id", "algorithm", "window_seconds", "configured", "gateway", "rejected")),
    build_workflow=lambda: chain(["ngm.nodes.ratelimit.nodes"], [("GetRateLimitsNode", "usage", {})]),
    result=("usage", "usage"),
)

operation(
    resource="ratelimits", action="set", summary="Change a gateway's rate limits",
    description="Takes effect on every instance within a second. 0 = unlimited.",
    role="org_admin", method="PUT", path="/gateways/{gateway_id}/rate-limits", id_param="gateway_id", partial=True,
    input_model=RateLimitSettings, output_model=GatewayOut,
    cli=CliSpec(columns=("id", "name", *RATE_LIMIT_FIELDS)),
    build_workflow=lambda: audited(_GATEWAY_NODES, ("UpdateGatewayNode", "patch", {}), "gateway.update", sealed=True),
    result=("patch", "gateway"),
)


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


def _check_path(value: str) -> str:
    from ngm.dataplane.invoke import escapes_base

    if escapes_base(value.encode()):
        raise ValueError("may not contain dot segments, encoded slashes or backslashes (the router refuses them)")
    return value


class RateLimitCheckQuery(RouteQuery):
    key_id: Optional[Annotated[str, StringConstraints(max_length=128, pattern=ID_PATTERN)]] = Field(
        None, description="whose quota: a key of your organization (default: the key asking)")
    client_ip: Optional[Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_ip)]] = Field(
        None, description="the caller's address")
    path: Optional[Annotated[str, StringConstraints(max_length=2048), AfterValidator(_check_path)]] = Field(
        None, description="what follows /invoke/ in the request")


class ScopeCheck(BaseModel):
    scope: str
    limit: int
    used: int
    remaining: int
    reset_seconds: int
    admitted: bool
    retry_after_seconds: int


class RateLimitCheckOut(BaseModel):
    admitted: bool
    status: int = Field(description="what the router would answer now: 200 (forwarded), 429, 503 or 404")
    scope: Optional[str] = Field(description="the refusing scope, or the tightest one when admitted")
    reason: str
    agent_id: str
    environment: str
    key_id: str
    client_ip: Optional[str]
    path: Optional[str]
    deployment_id: Optional[str]
    gateway_id: Optional[str]
    scopes: list[ScopeCheck]
    limiter: dict


def _check_workflow():
    from ngm.nodes.routing.nodes import explain_workflow

    return explain_workflow(then=("ngm.nodes.ratelimit.nodes", "CheckRateLimitsNode", "check"))


operation(
    resource="ratelimits", action="check", summary="Would a request be admitted now, and by which scope",
    description="For a request of this caller (a key of your organization; default the one asking) to this "
                "agent: the deployment the router would choose (as `route explain`), each limit of its gateway "
                "with what it has left, and the answer the router would give now. Uses no quota. The caller's "
                "address and path are taken and checked as the router would, for the per-IP and per-endpoint "
                "limits of edge policy; no limit in this version depends on them.",
    role="org_viewer", method="POST", path="/ratelimits/check", input_model=RateLimitCheckQuery,
    output_model=RateLimitCheckOut, transaction=False, reads_only=True,
    cli=CliSpec(columns=("admitted", "status", "scope", "reason", "deployment_id", "gateway_id")),
    build_workflow=_check_workflow, result=("check", "check"),
)
