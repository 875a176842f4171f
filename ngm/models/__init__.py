"""The tables: each declared once here, as a DataFlow model.

DataFlow creates them and their indexes (`register_models`, at start-up); ngm reads and writes them through
its own connections (`ngm.models.database`), which `TABLES` describes from the same declarations: every
column's kind and whether it may hold null. A field annotated `Optional[...]` may be null; every other field
may not, whatever its default (DataFlow leaves such columns nullable in the database: `ngm.models.query`
refuses the null instead, naming the field).

DataFlow adds created_at/updated_at itself (database defaults); ngm writes both explicitly, naive UTC with
microseconds. Ids are strings we generate: DataFlow never generates string ids.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional


class Gateway:
    __tablename__ = "gateways"
    id: str
    organization_id: str
    name: str
    description: Optional[str] = None
    environment: str
    gateway_type: str = "shared"
    region: Optional[str] = None
    api_url: str
    api_port: Optional[int] = None
    mcp_url: Optional[str] = None
    mcp_port: Optional[int] = None
    ssl_enabled: bool = False
    ssl_cert_id: Optional[str] = None
    api_key_encrypted: Optional[str] = None  # Fernet token; never leaves the server
    api_key_last4: Optional[str] = None  # shown so operators can tell which key is set
    health_check_url: Optional[str] = None
    min_instances: int = 1
    max_instances: int = 1
    current_instances: int = 0
    global_rate_limit: int = 0  # 0 = unlimited
    per_agent_rate_limit: int = 0
    per_user_rate_limit: int = 0
    rate_limit_window: float = 60.0  # seconds the three limits above are counted over
    rate_limit_algorithm: str = "sliding_window"  # sliding_window | token_bucket
    rate_limit_burst: int = 0  # token bucket: requests allowed at once (0 = the limit)
    auth_methods: list = []  # type: ignore[type-arg]  # JSON column, see _KINDS
    jwt_issuer: Optional[str] = None
    status: str = "active"  # administrative lifecycle
    health_status: str = "unknown"  # observed
    last_health_check: Optional[datetime] = None
    last_health_status: Optional[str] = None  # outcome of the last probe: ok, http_503, timeout, ...
    last_response_time_ms: Optional[float] = None
    # health-check policy (Kong/APISIX-like defaults) and the hysteresis counters behind health_status
    health_check_interval: float = 30.0  # seconds between probes
    health_check_timeout: float = 5.0  # seconds a probe may take
    healthy_threshold: int = 2  # consecutive successes to become healthy
    unhealthy_threshold: int = 3  # consecutive failures to become unhealthy
    degraded_latency_ms: float = 1000.0  # slower answers make a healthy gateway degraded
    health_grace_period: float = 60.0  # seconds after creation when failures do not count
    health_successes: int = 0
    health_failures: int = 0
    health_slow: int = 0  # consecutive slow successes
    health_fast: int = 0  # consecutive fast successes
    unhealthy_workflows: list = []  # type: ignore[type-arg]  # JSON column; from the gateway's Nexus health JSON
    request_timeout: float = 30.0  # seconds the router waits for this gateway's answer
    __dataflow__ = {
        "indexes": [
            {"name": "ux_gateways_org_name", "fields": ["organization_id", "name"], "unique": True},
            {"name": "ix_gateways_org_env", "fields": ["organization_id", "environment"]},
            {"name": "ix_gateways_org_status", "fields": ["organization_id", "status"]},
            {"name": "ix_gateways_org_health", "fields": ["organization_id", "health_status"]},
        ]
    }


class GatewayDeployment:
    __tablename__ = "gateway_deployments"
    id: str
    organization_id: str
    gateway_id: str
    agent_id: str
    agent_version: str
    workspace_id: Optional[str] = None
    weight: int = 100  # 0 = no new traffic
    is_active: bool = True
    status: str = "active"  # active | draining | inactive
    deployed_at: datetime
    deployed_by: str
    drain_started_at: Optional[datetime] = None
    drain_deadline: Optional[datetime] = None  # inactive by then even if requests are still in flight
    rate_limit: Optional[int] = None  # overrides the gateway's per_agent_rate_limit (None: the gateway's)
    rate_limit_failure_mode: str = "open"  # Redis down: open (local limits) | closed (503)
    __dataflow__ = {
        "indexes": [
            {"name": "ix_deployments_gateway", "fields": ["gateway_id", "is_active"]},
            {"name": "ix_deployments_org_agent", "fields": ["organization_id", "agent_id"]},
            {"name": "ix_deployments_org_status", "fields": ["organization_id", "status"]},
        ]
    }


class ApiKey:
    __tablename__ = "api_keys"
    id: str
    organization_id: str
    name: str
    role: str
    key_hash: str  # sha256 of the key; the key itself is shown once and never stored
    key_prefix: str
    created_by: Optional[str] = None
    revoked_at: Optional[datetime] = None
    last_used_at: Optional[datetime] = None
    rate_limit: Optional[int] = None  # per-user limit on the router for this key (None: the gateway's)
    api_rate_limit: Optional[int] = None  # management API requests per minute (None: NGM_API_RATE_LIMIT)
    __dataflow__ = {
        "indexes": [
            {"name": "ux_api_keys_hash", "fields": ["key_hash"], "unique": True},
            {"name": "ix_api_keys_org", "fields": ["organization_id"]},
        ]
    }


class AuditEvent:
    __tablename__ = "audit_events"
    id: str
    organization_id: str
    actor_id: str
    actor_name: str
    action: str  # e.g. gateway.create
    resource_type: str
    resource_id: str
    changes: dict = {}  # type: ignore[type-arg]  # JSON; field -> {"from", "to"}; secrets appear only as "[changed]"
    occurred_at: datetime
    __dataflow__ = {"indexes": [{"name": "ix_audit_org_time", "fields": ["organization_id", "occurred_at"]}]}


class HealthCheck:
    """One probe of one gateway (history; pruned after NGM_HEALTH_HISTORY_DAYS)."""

    __tablename__ = "health_checks"
    id: str
    organization_id: str
    gateway_id: str
    checked_at: datetime
    ok: bool = False
    outcome: str  # ok | http_error | timeout | connection_refused | tls_error | ...
    http_status: Optional[int] = None
    response_time_ms: float = 0.0
    health_status: str  # the gateway's status after this probe
    error: Optional[str] = None
    unhealthy_workflows: list = []  # type: ignore[type-arg]  # JSON column, see _KINDS
    source: str = "monitor"  # monitor | manual
    __dataflow__ = {"indexes": [{"name": "ix_health_checks_gateway_time", "fields": ["gateway_id", "checked_at"]},
                                {"name": "ix_health_checks_time", "fields": ["checked_at"]}]}


class HealthEvent:
    """A transition of a gateway's health_status (and of its status, when the monitor moved it)."""

    __tablename__ = "health_events"
    id: str
    organization_id: str
    gateway_id: str
    gateway_name: str
    occurred_at: datetime
    from_health: str
    to_health: str
    from_status: str
    to_status: str
    reason: str
    __dataflow__ = {"indexes": [{"name": "ix_health_events_org_time", "fields": ["organization_id", "occurred_at"]},
                                {"name": "ix_health_events_gateway", "fields": ["gateway_id", "occurred_at"]}]}


class Webhook:
    __tablename__ = "webhooks"
    id: str
    organization_id: str
    url: str
    description: Optional[str] = None
    events: list = []  # type: ignore[type-arg]  # JSON column; event types it receives
    active: bool = True
    secret_encrypted: str  # Fernet token of the signing secret
    created_by: Optional[str] = None
    __dataflow__ = {"indexes": [{"name": "ix_webhooks_org", "fields": ["organization_id"]}]}


class WebhookDelivery:
    __tablename__ = "webhook_deliveries"
    id: str
    organization_id: str
    webhook_id: str
    event_id: str
    event_type: str
    payload: dict = {}  # type: ignore[type-arg]  # JSON column, see _KINDS
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime
    last_status_code: Optional[int] = None
    last_error: Optional[str] = None
    delivered_at: Optional[datetime] = None
    __dataflow__ = {"indexes": [{"name": "ix_deliveries_due", "fields": ["status", "next_attempt_at"]},
                                {"name": "ix_deliveries_webhook", "fields": ["webhook_id", "created_at"]}]}


class RoutingPolicy:
    """How requests to one agent in one environment are spread over its deployments."""

    __tablename__ = "routing_policies"
    id: str
    organization_id: str
    agent_id: str
    environment: str
    strategy: str = "weighted"  # round_robin | least_connections | weighted | geographic
    sticky: bool = False
    sticky_header: str = "X-Routing-Key"  # else the caller's API key id
    fallback: str = "any_region"  # geographic, nothing healthy in the caller's region: any_region | none
    fallback_regions: list = []  # type: ignore[type-arg]  # JSON column; tried in order before any_region
    __dataflow__ = {"indexes": [{"name": "ux_routing_policy_scope",
                                 "fields": ["organization_id", "agent_id", "environment"], "unique": True}]}


class Instance:
    """A serving instance that shares Redis with others, as last heard of through the database: so that one cut
    off from Redis is still known to be there (a drain must not take its silence for nothing in flight)."""

    __tablename__ = "instances"
    id: str
    last_seen: datetime


class RoutingChange:
    """A change to what the routing snapshot reads, appended by triggers (ngm.models.changes): instances re-read
    only the organizations that changed."""

    __tablename__ = "routing_changes"
    id: str
    organization_id: str
    changed_at: datetime  # the database's clock at the change
    # covering the poll (ngm.models.changes.counts_since): the counts come from the index alone, 3-4x faster
    __dataflow__ = {"indexes": [{"name": "ix_routing_changes_time_org", "fields": ["changed_at", "organization_id"]}]}


MODELS = (Gateway, GatewayDeployment, ApiKey, AuditEvent, HealthCheck, HealthEvent, Webhook, WebhookDelivery,
          RoutingPolicy, Instance, RoutingChange)
MODEL_NAMES = tuple(m.__name__ for m in MODELS)


def register_models(db: Any) -> None:
    """Declare every model on a DataFlow instance (a class of its own per instance: DataFlow keeps state on
    the classes it is given)."""
    for model in MODELS:
        body = {k: v for k, v in vars(model).items() if k not in ("__dict__", "__weakref__")}
        db.model(type(model.__name__, (), body))


# ---------------------------------------------------------------- what ngm's own SQL knows of each table

# JSON columns are annotated with a bare list or dict (type: ignore[type-arg] on each): this maps the class itself
# (list[str] would be a KeyError here), and DataFlow is given the same annotations
_KINDS = {str: "text", int: "int", float: "float", bool: "bool", list: "json", dict: "json", datetime: "time"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | int | float | bool | json | time
    nullable: bool  # declared Optional


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]

    def __getitem__(self, column: str) -> Column:
        return self.columns[column]


def _describe(model: type[Any]) -> Table:
    hints = typing.get_type_hints(model)
    columns = {}
    for name, hint in hints.items():
        args = typing.get_args(hint)
        nullable = typing.get_origin(hint) is typing.Union and type(None) in args
        base = next(a for a in args if a is not type(None)) if nullable else hint
        columns[name] = Column(name, _KINDS[base], nullable)
    for stamp in ("created_at", "updated_at"):  # DataFlow's own
        columns[stamp] = Column(stamp, "time", True)
    return Table(model.__tablename__, columns)


TABLES: dict[str, Table] = {m.__name__: _describe(m) for m in MODELS}
