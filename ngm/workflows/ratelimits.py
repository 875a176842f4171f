"""Rate limits of a gateway: what is configured, what is used now, what was refused; and setting them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel

from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import RATE_LIMIT_FIELDS, GatewayOut, RateLimitSettings
from ngm.workflows.registry import CliSpec, operation

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
    resource="ratelimits", action="show", summary="A gateway's rate limits and their current usage",
    description="Configured limits; usage now per scope (the gateway, each agent deployed on it, each caller "
                "seen in the current window); refusals counted per scope. Shared figures with Redis; without "
                "it, this instance's.",
    role="org_viewer", method="GET", path="/gateways/{gateway_id}/rate-limits", id_param="gateway_id",
    output_model=RateLimitsOut,
    cli=CliSpec(columns=("gateway_id", "algorithm", "window_seconds", "configured", "gateway", "rejected")),
    build_workflow=lambda: chain(["ngm.nodes.ratelimit.nodes"], [("RateLimitUsageNode", "usage", {})]),
    result=("usage", "usage"),
)

operation(
    resource="ratelimits", action="set", summary="Change a gateway's rate limits",
    description="Takes effect on every instance within a second. 0 = unlimited.",
    role="org_admin", method="PUT", path="/gateways/{gateway_id}/rate-limits", id_param="gateway_id", partial=True,
    input_model=RateLimitSettings, output_model=GatewayOut,
    cli=CliSpec(columns=("id", "name", *RATE_LIMIT_FIELDS)),
    build_workflow=lambda: audited(_GATEWAY_NODES, ("PatchGatewayNode", "patch", {}), "gateway.update", sealed=True),
    result=("patch", "gateway"),
)
