"""Routing policies per agent and environment, route explanation, and observed traffic."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator, model_validator

from ngm.dataplane.traffic import KEEP_SECONDS
from ngm.nodes.health.stats import parse_window
from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import Environment
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import AgentId, Region, Strict

_NODES = ["ngm.nodes.routing.nodes"]
Strategy = Literal["round_robin", "least_connections", "weighted", "geographic"]
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_POLICY_CLI = CliSpec(columns=("agent_id", "environment", "strategy", "sticky", "sticky_header", "fallback",
                               "fallback_regions"))


def check_header(value: str) -> str:
    if not _HEADER.fullmatch(value):
        raise ValueError("must be an HTTP header name")
    return value



class Scope(Strict):
    agent_id: AgentId
    environment: Environment


class PolicyInput(Scope):
    strategy: Strategy = "weighted"
    sticky: bool = Field(False, description="keep one user on one deployment while the weights allow it")
    sticky_header: Annotated[str, StringConstraints(max_length=64), AfterValidator(check_header)] = Field(
        "X-Routing-Key", description="where the user's key comes from; without it, the caller's API key id")
    fallback: Literal["any_region", "none"] = Field(
        "any_region", description="geographic: when nothing is healthy in the caller's region")
    fallback_regions: list[Region] = Field(default_factory=list, max_length=16,
                                           description="geographic: tried in order first")

    @model_validator(mode="after")
    def _sticky_needs_a_choice(self):
        if self.sticky and self.strategy == "least_connections":
            raise ValueError("sticky routing does not apply to least_connections")
        return self


class PolicyListQuery(Strict):
    agent_id: Optional[str] = Field(None, max_length=128)


class PolicyOut(BaseModel):
    id: Optional[str] = Field(description="null for the default policy (none set)")
    organization_id: str
    agent_id: str
    environment: str
    strategy: Strategy
    sticky: bool
    sticky_header: str
    fallback: str
    fallback_regions: list[str]
    default: bool = False


class PolicyList(BaseModel):
    items: list[PolicyOut]


class PolicyDeleted(BaseModel):
    agent_id: str
    environment: str


class RouteQuery(Scope):
    region: Optional[Region] = Field(None, description="the caller's region (geographic routing)")
    routing_key: Optional[str] = Field(None, max_length=256, description="sticky key; default: your API key id")


class RouteCandidate(BaseModel):
    deployment_id: str
    gateway_id: str
    gateway_name: str
    agent_version: str
    weight: int
    region: Optional[str]
    health_status: str
    in_flight: int
    circuit: str
    share_percent: Optional[float] = None
    reason: Optional[str] = None


class RouteOut(BaseModel):
    agent_id: str
    environment: str
    known: bool = Field(description="false when the agent has no deployment in this environment")
    policy: dict
    strategy: str
    reason: str
    region: Optional[str]
    region_used: Optional[str]
    sticky_key_source: Optional[str]
    deployment: Optional[RouteCandidate] = Field(description="null: nothing eligible (requests get 503)")
    candidates: list[RouteCandidate]
    skipped: list[RouteCandidate]
    steps: list[dict] = Field(description="each node of the decision and what it saw or chose")


def _explain_workflow():
    from ngm.nodes.routing.nodes import explain_workflow  # kailash: imported only when a workflow is built

    return explain_workflow()


class TrafficQuery(Strict):
    environment: Environment = "production"
    window: str = Field("5m", max_length=16, description="1m to 15m")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            seconds = parse_window(value).total_seconds()
        except ValueError:
            seconds = None
        if seconds is None or seconds > KEEP_SECONDS:  # figures are kept this long
            raise ValueError(f"must be a number and a unit (s, m, h or d) between 1m and {KEEP_SECONDS // 60}m")
        return value


class LatencyOut(BaseModel):
    p50: Optional[float]
    p95: Optional[float]
    p99: Optional[float]


class DeploymentTraffic(BaseModel):
    deployment_id: str
    gateway_id: str
    gateway_name: str
    region: Optional[str]
    agent_version: str
    status: str
    weight: int
    configured_share_percent: float
    observed_share_percent: float
    requests: int
    errors: int
    error_rate: float
    rate_limited: int
    requests_per_second: float
    in_flight: int
    latency_ms: LatencyOut


class TrafficOut(BaseModel):
    agent_id: str
    environment: str
    window: str
    window_seconds: int
    requests: int
    complete: bool = Field(description="false: the figures leave out other instances' requests (Redis unreachable, "
                                       "or a process that serves no traffic and cannot read the shared figures)")
    deployments: list[DeploymentTraffic]


operation(
    resource="routing", action="set", summary="Set the routing policy of an agent in an environment",
    description="strategy: round_robin, least_connections, weighted (default) or geographic; optional sticky key.",
    role="org_admin", method="PUT", path="/routing/policies", input_model=PolicyInput, output_model=PolicyOut,
    cli=_POLICY_CLI, build_workflow=lambda: audited(_NODES, ("SetPolicyNode", "put", {}), "routing_policy.set"),
    result=("put", "policy"),
)

operation(
    resource="routing", action="get", summary="The routing policy in force (the default when none is set)",
    role="org_viewer", method="GET", path="/routing/policy", input_model=Scope, output_model=PolicyOut,
    cli=_POLICY_CLI, build_workflow=lambda: chain(_NODES, [("GetPolicyNode", "get", {})]), result=("get", "policy"),
)

operation(
    resource="routing", action="list", summary="List routing policies", role="org_viewer", method="GET",
    path="/routing/policies", input_model=PolicyListQuery, output_model=PolicyList, cli=_POLICY_CLI,
    build_workflow=lambda: chain(_NODES, [("ListPoliciesNode", "list", {})]), result=("list", "policies"),
)

operation(
    resource="routing", action="delete", summary="Remove a routing policy (the default applies again)",
    role="org_admin", method="DELETE", path="/routing/policy", input_model=Scope, output_model=PolicyDeleted,
    cli=_POLICY_CLI,
    build_workflow=lambda: audited(_NODES, ("DeletePolicyNode", "delete", {}), "routing_policy.delete"),
    result=("delete", "deleted"),
)

operation(
    resource="route", action="explain", summary="Which deployment and gateway would serve a request, and why",
    description="Strategy, candidates with weights and shares, skipped deployments with reasons, and each step "
                "of the workflow that decided (the route as the router holds it, the filter, the policy's "
                "strategy node). The same choice the router makes for the next such request; does not affect "
                "live traffic.",
    role="org_viewer", method="POST", path="/route", input_model=RouteQuery, output_model=RouteOut,
    transaction=False, reads_only=True,
    cli=CliSpec(columns=("agent_id", "environment", "strategy", "reason", "deployment")),
    build_workflow=lambda: _explain_workflow(), result=("explain", "route"),
)

operation(
    resource="agents", action="traffic", summary="An agent's traffic per deployment",
    description="Configured split next to the observed split, requests, errors, rate-limit rejections and "
                "p50/p95/p99 latency over a recent window.",
    role="org_viewer", method="GET", path="/agents/{agent_id}/traffic", id_param="agent_id",
    input_model=TrafficQuery, output_model=TrafficOut,
    cli=CliSpec(columns=("deployment_id", "gateway_name", "agent_version", "status", "configured_share_percent",
                         "observed_share_percent", "requests", "errors", "latency_ms")),
    build_workflow=lambda: chain(_NODES, [("AgentTrafficNode", "traffic", {})]), result=("traffic", "traffic"),
)
