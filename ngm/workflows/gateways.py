"""Gateway registry operations."""

from __future__ import annotations

from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import (
    GatewayCreate,
    GatewayDeleteQuery,
    GatewayListQuery,
    GatewayOut,
    GatewayPage,
    GatewayResolveQuery,
    GatewayUpdate,
    HealthCheckOut,
    HealthHistoryOut,
    HistoryQuery,
)
from ngm.workflows.registry import CliSpec, operation

_NODES = ["ngm.nodes.gateways.nodes", "ngm.nodes.secrets.nodes", "ngm.nodes.audit.nodes", "ngm.nodes.health.nodes"]
_TABLE = ("id", "name", "environment", "gateway_type", "region", "status", "health_status", "last_health_check",
          "last_response_time_ms")
_CLI = CliSpec(columns=_TABLE, rename={"api_key": "gateway-api-key"})


operation(
    resource="gateways", action="create", summary="Register a gateway",
    description="Register a gateway of the caller's organization. Its api_key is stored encrypted and never returned.",
    role="org_admin", method="POST", path="/gateways", status_code=201,
    input_model=GatewayCreate, output_model=GatewayOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("CreateGatewayNode", "insert", {}), "gateway.create", sealed=True),
    result=("insert", "gateway"),
)

operation(
    resource="gateways", action="list", summary="List gateways",
    description="List the organization's gateways, filtered by environment, status and health_status; paginated.",
    role="org_viewer", method="GET", path="/gateways",
    input_model=GatewayListQuery, output_model=GatewayPage, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("ListGatewaysNode", "list", {})]),
    result=("list", "page"),
)

operation(
    resource="gateways", action="resolve", summary="Resolve the gateway serving an environment",
    description="The first active gateway of an environment (healthiest first, then oldest).",
    role="org_viewer", method="GET", path="/gateways/resolve",
    input_model=GatewayResolveQuery, output_model=GatewayOut, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("ResolveGatewayNode", "resolve", {})]),
    result=("resolve", "gateway"),
)

operation(
    resource="gateways", action="get", summary="Show one gateway",
    role="org_viewer", method="GET", path="/gateways/{gateway_id}", id_param="gateway_id",
    output_model=GatewayOut, cli=_CLI,
    build_workflow=lambda: chain(_NODES, [("GetGatewayNode", "fetch", {})]),
    result=("fetch", "gateway"),
)

operation(
    resource="gateways", action="update", summary="Change a gateway (partial update)",
    description="Only the fields sent change; null clears an optional field; api_key null or empty removes the key.",
    role="org_admin", method="PUT", path="/gateways/{gateway_id}", id_param="gateway_id", partial=True,
    input_model=GatewayUpdate, output_model=GatewayOut, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("UpdateGatewayNode", "patch", {}), "gateway.update", sealed=True),
    result=("patch", "gateway"),
)

operation(
    resource="gateways", action="delete", summary="Delete a gateway",
    description="Refused with 409 while the gateway has active deployments, unless force is set.",
    role="org_admin", method="DELETE", path="/gateways/{gateway_id}", id_param="gateway_id", status_code=204,
    input_model=GatewayDeleteQuery, cli=_CLI,
    build_workflow=lambda: audited(_NODES, ("DeleteGatewayNode", "remove", {}), "gateway.delete"),
    result=("remove", "deleted"),
)

operation(
    resource="gateways", action="check", summary="Check a gateway's health now",
    description="Probe the gateway's health URL (or api_url + /health) with its key now, and record the outcome "
                "as the monitor does: history, hysteresis thresholds, status and transition events.",
    role="org_member", method="POST", path="/gateways/{gateway_id}/health", id_param="gateway_id",
    output_model=HealthCheckOut, transaction=False,  # no transaction held open while the gateway answers:
    # the outcome is recorded in one of its own
    cli=CliSpec(columns=("gateway_id", "status", "gateway_status", "outcome", "http_status", "response_time_ms",
                         "last_check")),
    build_workflow=lambda: chain(
        _NODES, [("ProbeGatewayNode", "probe", {}), ("RecordHealthNode", "record", {})],
        [("probe", "probe", "record", "probe")],
    ),
    result=("record", "health"),
)

operation(
    resource="gateways", action="history", summary="A gateway's health history",
    description="Recent probes, uptime percentage and latency percentiles (successful probes) over a window.",
    role="org_viewer", method="GET", path="/gateways/{gateway_id}/health/history", id_param="gateway_id",
    input_model=HistoryQuery, output_model=HealthHistoryOut,
    cli=CliSpec(columns=("checked_at", "outcome", "http_status", "response_time_ms", "health_status", "source")),
    build_workflow=lambda: chain(_NODES, [("GetHealthHistoryNode", "history", {})]),
    result=("history", "history"),
)
