"""Agent deployments: put an agent version on a gateway with a weight; change, drain, stop, remove."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field

from ngm.workflows.build import audited, chain
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import CURSOR_HELP, LIMIT_HELP, AgentId, Cursor, Offset, Partial, Strict, Version

_NODES = ["ngm.nodes.deployments.nodes"]
_CLI = CliSpec(columns=("id", "agent_id", "agent_version", "gateway_id", "weight", "status", "in_flight",
                        "deployed_at"))


Weight = Annotated[int, Field(ge=0, le=10_000, description="share of traffic relative to the others; 0 = none")]
AgentLimit = Annotated[int, Field(ge=0, le=1_000_000_000, description=(
    "requests per window for this agent on this gateway, overriding the gateway's per_agent_rate_limit; "
    "0 = unlimited, null = the gateway's"))]
FailureMode = Annotated[Literal["open", "closed"], Field(description=(
    "when Redis is down: open = limit locally at limit / live instances, closed = answer 503"))]



class DeploymentCreate(Strict):
    gateway_id: str = Field(max_length=128)
    agent_id: AgentId
    agent_version: Version
    workspace_id: Optional[str] = Field(None, min_length=1, max_length=128)
    weight: Weight = 100
    rate_limit: Optional[AgentLimit] = None
    rate_limit_failure_mode: FailureMode = "open"


class DeploymentUpdate(Partial, table="GatewayDeployment"):
    agent_version: Optional[Version] = None
    workspace_id: Optional[str] = Field(None, min_length=1, max_length=128)
    weight: Optional[Weight] = None
    rate_limit: Optional[AgentLimit] = None
    rate_limit_failure_mode: Optional[FailureMode] = None


class DeploymentQuery(Strict):
    gateway_id: Optional[str] = Field(None, max_length=128)
    agent_id: Optional[str] = Field(None, max_length=128)
    status: Optional[Literal["active", "draining", "inactive"]] = None
    limit: int = Field(50, ge=1, le=500, description=LIMIT_HELP)
    offset: Offset = 0
    cursor: Optional[Cursor] = Field(None, description=CURSOR_HELP)


class DrainInput(Strict):
    timeout_seconds: float = Field(30.0, ge=0, le=3600,
                                   description="after this, inactive even if requests are still in flight")


class DeploymentOut(BaseModel):
    id: str
    organization_id: str
    gateway_id: str
    agent_id: str
    agent_version: str
    workspace_id: Optional[str]
    weight: int
    rate_limit: Optional[int]
    rate_limit_failure_mode: Literal["open", "closed"]
    is_active: bool
    status: Literal["active", "draining", "inactive"]
    in_flight: int = Field(description="requests in flight now")
    deployed_at: str
    deployed_by: str
    drain_started_at: Optional[str]
    drain_deadline: Optional[str]
    created_at: str
    updated_at: str


class DeploymentPage(BaseModel):
    items: list[DeploymentOut]
    total: int
    limit: int
    offset: int
    next_cursor: Optional[str] = Field(description="the cursor of the next page; null on the last")


def _change(node_change: str, action: str):
    return lambda: audited(_NODES, ("UpdateDeploymentNode", "change", {"change": node_change}), action)


operation(
    resource="deployments", action="create", summary="Deploy an agent version on a gateway",
    description="The gateway must belong to the caller's organization; deployed_by is the caller's key.",
    role="org_admin", method="POST", path="/deployments", status_code=201, input_model=DeploymentCreate,
    output_model=DeploymentOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("CreateDeploymentNode", "create", {}), "deployment.create"),
    result=("create", "deployment"),
)

operation(
    resource="deployments", action="list", summary="List deployments",
    description="Filter by gateway, agent and status; paginated.", role="org_viewer", method="GET",
    path="/deployments", input_model=DeploymentQuery, output_model=DeploymentPage, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("ListDeploymentsNode", "list", {})]), result=("list", "page"),
)

operation(
    resource="deployments", action="get", summary="Show one deployment", role="org_viewer", method="GET",
    path="/deployments/{deployment_id}", id_param="deployment_id", output_model=DeploymentOut, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("GetDeploymentNode", "fetch", {})]), result=("fetch", "deployment"),
)

operation(
    resource="deployments", action="update", summary="Change a deployment's weight, version or workspace",
    role="org_admin", method="PUT", path="/deployments/{deployment_id}", id_param="deployment_id", partial=True,
    input_model=DeploymentUpdate, output_model=DeploymentOut, cli=_CLI,
    build_workflow=_change("patch", "deployment.update"), result=("change", "deployment"),
)

operation(
    resource="deployments", action="drain", summary="Drain a deployment",
    description="No new traffic at once; requests in flight finish (up to timeout_seconds), then it becomes "
                "inactive. Meanwhile its status is draining and in_flight counts what is left.",
    role="org_admin", method="POST", path="/deployments/{deployment_id}/drain", id_param="deployment_id",
    status_code=202, input_model=DrainInput, output_model=DeploymentOut, cli=_CLI,
    build_workflow=_change("drain", "deployment.drain"), result=("change", "deployment"),
)

operation(
    resource="deployments", action="deactivate", summary="Stop a deployment's traffic now",
    description="No new requests; requests in flight are not waited for (drain waits).",
    role="org_admin", method="POST", path="/deployments/{deployment_id}/deactivate", id_param="deployment_id",
    output_model=DeploymentOut, cli=_CLI, build_workflow=_change("deactivate", "deployment.deactivate"),
    result=("change", "deployment"),
)

operation(
    resource="deployments", action="activate", summary="Put an inactive deployment back into rotation",
    role="org_admin", method="POST", path="/deployments/{deployment_id}/activate", id_param="deployment_id",
    output_model=DeploymentOut, cli=_CLI, build_workflow=_change("activate", "deployment.activate"),
    result=("change", "deployment"),
)

operation(
    resource="deployments", action="delete", summary="Delete a deployment", role="org_admin", method="DELETE",
    path="/deployments/{deployment_id}", id_param="deployment_id", status_code=204, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("DeleteDeploymentNode", "remove", {}), "deployment.delete"),
    result=("remove", "deleted"),
)
