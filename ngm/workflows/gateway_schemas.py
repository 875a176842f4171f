"""Typed inputs and outputs of the gateway operations (pydantic; shared by REST, CLI and MCP)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from ngm.nodes.gateways import validation as v
from ngm.nodes.health.stats import parse_window
from ngm.workflows.schema import CURSOR_HELP, LIMIT_HELP, Cursor, HttpUrl, Offset, Partial, Region, Strict

Environment = Literal["development", "staging", "production"]
GatewayType = Literal["shared", "dedicated", "private"]
SettableStatus = Literal["active", "inactive", "provisioning"]
Status = Literal["active", "inactive", "provisioning", "error"]
HealthStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
AuthMethod = Literal["api_key", "jwt", "oauth2", "mtls"]

Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(v.check_name)]
Text = Annotated[str, StringConstraints(max_length=4000)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Port = Annotated[int, Field(ge=1, le=65535)]
Instances = Annotated[int, Field(ge=0, le=100_000)]
RateLimit = Annotated[int, Field(ge=0, le=1_000_000_000)]
RateWindow = Annotated[float, Field(ge=1, le=86_400)]
RateAlgorithm = Literal["sliding_window", "token_bucket"]
AuthMethods = Annotated[list[AuthMethod], Field(max_length=4), AfterValidator(v.check_unique_items)]
Interval = Annotated[float, Field(ge=0.5, le=3600)]
ProbeTimeout = Annotated[float, Field(ge=0.1, le=60)]
Threshold = Annotated[int, Field(ge=1, le=100)]
LatencyMs = Annotated[float, Field(ge=1, le=600_000)]
Grace = Annotated[float, Field(ge=0, le=86_400)]
RequestTimeout = Annotated[float, Field(ge=0.1, le=600)]


def _check_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and value.get_secret_value():
        v.check_secret(value.get_secret_value())
    return value


GatewayApiKey = Annotated[SecretStr, StringConstraints(max_length=4096), AfterValidator(_check_secret)]

_DESCRIPTIONS = {
    "name": "unique within the organization",
    "api_url": "base URL of the gateway's API (http or https)",
    "health_check_url": "defaults to api_url + /health",
    "ssl_enabled": "defaults to true for https api_url",
    "status": "administrative lifecycle; `error` is set only by the health monitor",
    "api_key": "the gateway's own API key; write-only, stored encrypted; empty (or null, CLI: --clear api_key) "
               "clears it",
    "global_rate_limit": "requests per window across the gateway; 0 = unlimited",
    "per_agent_rate_limit": "requests per window per agent; 0 = unlimited",
    "per_user_rate_limit": "requests per window per caller (API key); 0 = unlimited",
    "rate_limit_window": "seconds the rate limits count over (default 60)",
    "rate_limit_algorithm": "sliding_window (default) or token_bucket (a steady rate with bursts)",
    "rate_limit_burst": "token_bucket: requests allowed at once; 0 = the limit",
    "auth_methods": "how callers authenticate to the gateway",
    "health_check_interval": "seconds between background probes (default 30)",
    "health_check_timeout": "seconds a probe may take, at most the interval (default 5)",
    "healthy_threshold": "consecutive successes to become healthy, or to switch healthy/degraded (default 2)",
    "unhealthy_threshold": "consecutive failures to become unhealthy (default 3)",
    "degraded_latency_ms": "answers slower than this make a healthy gateway degraded (default 1000)",
    "health_grace_period": "seconds after creation during which failures do not make it unhealthy (default 60)",
    "request_timeout": "seconds the router waits for this gateway's answer to a forwarded request (default 30)",
}


class GatewayCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "edge-eu", "environment": "production", "api_url": "http://127.0.0.1:8081", "region": "eu-west-1"}]})

    name: Name
    description: Optional[Text] = None
    environment: Environment
    gateway_type: GatewayType = "shared"
    region: Optional[Region] = None
    api_url: HttpUrl
    api_port: Optional[Port] = None
    mcp_url: Optional[HttpUrl] = None
    mcp_port: Optional[Port] = None
    ssl_enabled: Optional[bool] = None
    ssl_cert_id: Optional[ShortText] = None
    api_key: Optional[GatewayApiKey] = None
    health_check_url: Optional[HttpUrl] = None
    min_instances: Instances = 1
    max_instances: Instances = 1
    current_instances: Instances = 0
    global_rate_limit: RateLimit = 0
    per_agent_rate_limit: RateLimit = 0
    per_user_rate_limit: RateLimit = 0
    rate_limit_window: RateWindow = 60.0
    rate_limit_algorithm: RateAlgorithm = "sliding_window"
    rate_limit_burst: RateLimit = 0
    auth_methods: AuthMethods = ["api_key"]
    jwt_issuer: Optional[ShortText] = None
    status: SettableStatus = "active"
    health_check_interval: Interval = 30.0
    health_check_timeout: ProbeTimeout = 5.0
    healthy_threshold: Threshold = 2
    unhealthy_threshold: Threshold = 3
    degraded_latency_ms: LatencyMs = 1000.0
    health_grace_period: Grace = 60.0
    request_timeout: RequestTimeout = 30.0


RATE_LIMIT_FIELDS = ("global_rate_limit", "per_agent_rate_limit", "per_user_rate_limit", "rate_limit_window",
                     "rate_limit_algorithm", "rate_limit_burst")


class RateLimitSettings(Partial, table="Gateway"):
    """Partial: only the fields sent change. Limits are requests per window; 0 = unlimited."""

    global_rate_limit: Optional[RateLimit] = None
    per_agent_rate_limit: Optional[RateLimit] = None
    per_user_rate_limit: Optional[RateLimit] = None
    rate_limit_window: Optional[RateWindow] = None
    rate_limit_algorithm: Optional[RateAlgorithm] = None
    rate_limit_burst: Optional[RateLimit] = None


class GatewayUpdate(RateLimitSettings, table="Gateway", columns={"api_key": "api_key_encrypted"}):
    """Partial update: only the fields sent change; null clears an optional field."""

    name: Optional[Name] = None
    description: Optional[Text] = None
    environment: Optional[Environment] = None
    gateway_type: Optional[GatewayType] = None
    region: Optional[Region] = None
    api_url: Optional[HttpUrl] = None
    api_port: Optional[Port] = None
    mcp_url: Optional[HttpUrl] = None
    mcp_port: Optional[Port] = None
    ssl_enabled: Optional[bool] = None
    ssl_cert_id: Optional[ShortText] = None
    api_key: Optional[GatewayApiKey] = None
    health_check_url: Optional[HttpUrl] = None
    min_instances: Optional[Instances] = None
    max_instances: Optional[Instances] = None
    current_instances: Optional[Instances] = None
    auth_methods: Optional[AuthMethods] = None
    jwt_issuer: Optional[ShortText] = None
    status: Optional[SettableStatus] = None
    health_check_interval: Optional[Interval] = None
    health_check_timeout: Optional[ProbeTimeout] = None
    healthy_threshold: Optional[Threshold] = None
    unhealthy_threshold: Optional[Threshold] = None
    degraded_latency_ms: Optional[LatencyMs] = None
    health_grace_period: Optional[Grace] = None
    request_timeout: Optional[RequestTimeout] = None


for _model in (GatewayCreate, RateLimitSettings, GatewayUpdate):
    for _field, _text in _DESCRIPTIONS.items():
        if _field in _model.model_fields:
            _model.model_fields[_field].description = _text
    _model.model_rebuild(force=True)


class GatewayListQuery(Strict):
    environment: Optional[Environment] = None
    status: Optional[Status] = None
    health_status: Optional[HealthStatus] = None
    limit: int = Field(50, ge=1, le=500, description=LIMIT_HELP)
    offset: Offset = 0
    cursor: Optional[Cursor] = Field(None, description=CURSOR_HELP)


class GatewayDeleteQuery(Strict):
    force: bool = Field(False, description="also delete the gateway's deployments, active ones included")


class GatewayResolveQuery(Strict):
    environment: Environment


class GatewayOut(BaseModel):
    id: str
    organization_id: str
    name: str
    description: Optional[str]
    environment: Environment
    gateway_type: GatewayType
    region: Optional[str]
    api_url: str
    api_port: Optional[int]
    mcp_url: Optional[str]
    mcp_port: Optional[int]
    ssl_enabled: bool
    ssl_cert_id: Optional[str]
    api_key_set: bool
    api_key_last4: Optional[str]
    health_check_url: Optional[str]
    min_instances: int
    max_instances: int
    current_instances: int
    global_rate_limit: int
    per_agent_rate_limit: int
    per_user_rate_limit: int
    rate_limit_window: float
    rate_limit_algorithm: RateAlgorithm
    rate_limit_burst: int
    auth_methods: list[str]
    jwt_issuer: Optional[str]
    status: Status
    health_status: HealthStatus
    last_health_check: Optional[str]
    last_health_status: Optional[str]
    last_response_time_ms: Optional[float]
    unhealthy_workflows: list[str]
    health_check_interval: float
    health_check_timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    degraded_latency_ms: float
    health_grace_period: float
    request_timeout: float
    created_at: str
    updated_at: str


class GatewayPage(BaseModel):
    items: list[GatewayOut]
    total: int
    limit: int
    offset: int
    next_cursor: Optional[str] = Field(description="the cursor of the next page; null on the last")


class AlertDelivery(BaseModel):
    webhook_id: str
    status: str
    attempts: int
    last_status_code: Optional[int]
    delivered_at: Optional[str]


class TransitionOut(BaseModel):
    id: str
    organization_id: str
    gateway_id: str
    gateway_name: str
    occurred_at: str
    from_health: HealthStatus
    to_health: HealthStatus
    from_status: Status
    to_status: Status
    reason: str
    deliveries: list[AlertDelivery] = Field(default_factory=list, description="webhook alerts sent for it")


class HealthCheckOut(BaseModel):
    gateway_id: str
    status: HealthStatus = Field(description="health_status after this probe (with hysteresis)")
    gateway_status: Status
    last_check: str
    response_time_ms: float
    outcome: str = Field(description="ok, http_503, timeout, connection_refused, tls_error, dns_error, "
                                     "address_blocked, redirect_refused, reported_unhealthy, error")
    http_status: Optional[int]
    error: Optional[str]
    unhealthy_workflows: list[str]
    transition: Optional[TransitionOut]


class HistoryQuery(Strict):
    window: str = Field("24h", max_length=16, description="how far back: e.g. 30m, 1h, 24h, 7d (1m to 30d)")
    limit: int = Field(100, ge=1, le=5000, description="most recent probes to list")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value


class HealthProbeOut(BaseModel):
    checked_at: str
    ok: bool
    outcome: str
    http_status: Optional[int]
    response_time_ms: float
    health_status: HealthStatus
    error: Optional[str]
    unhealthy_workflows: list[str]
    source: str


class LatencyOut(BaseModel):
    p50: Optional[float]
    p95: Optional[float]
    p99: Optional[float]
    max: Optional[float]


class HealthHistoryOut(BaseModel):
    gateway_id: str
    window: str
    since: str
    health_status: HealthStatus
    status: Status
    probes: int
    successes: int
    uptime_percent: Optional[float]
    latency_ms: LatencyOut
    items: list[HealthProbeOut]
