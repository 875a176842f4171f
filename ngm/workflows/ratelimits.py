"""Rate limits of a gateway: what is configured, what is used now, what was refused; and setting them."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel

from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import GatewayOut, RateAlgorithm, RateLimit, RateWindow
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import Strict, reject_null

_GATEWAY_NODES = ["ngm.nodes.gateways.nodes"]
_FIELDS = ("global_rate_limit", "per_agent_rate_limit", "per_user_rate_limit", "rate_limit_window",
           "rate_limit_algorithm", "rate_limit_burst")


class RateLimitSettings(Strict):
    """Partial: only the fields sent change. Limits are requests per window; 0 = unlimited."""

    global_rate_limit: Optional[RateLimit] = None
    per_agent_rate_limit: Optional[RateLimit] = None
    per_user_rate_limit: Optional[RateLimit] = None
    rate_limit_window: Optional[RateWindow] = None
    rate_limit_algorithm: Optional[RateAlgorithm] = None
    rate_limit_burst: Optional[RateLimit] = None

    _not_null = reject_null(*_FIELDS)


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
    cli=CliSpec(columns=("id", "name", *_FIELDS)),
    build_workflow=lambda: audited(_GATEWAY_NODES, ("PatchGatewayNode", "patch", {}), "gateway.update", sealed=True),
    result=("patch", "gateway"),
)
