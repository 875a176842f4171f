"""Health transitions (the stream itself is GET /api/v1/events, Server-Sent Events) and webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, Field, field_validator

from ngm.models.rows import parse_time
from ngm.nodes.events.store import WEBHOOK_EVENT_TYPES
from ngm.nodes.gateways import validation as v
from ngm.workflows.build import audited, chain
from ngm.workflows.gateway_schemas import TransitionOut
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import HttpUrl, Partial, Strict

_NODES = ["ngm.nodes.events.nodes", "ngm.nodes.audit.nodes"]
EventType = Literal[WEBHOOK_EVENT_TYPES]  # type: ignore[valid-type]  # made from the names at run time
_HOOK_CLI = CliSpec(columns=("id", "url", "events", "active", "description", "created_at"),
                    rename={"url": "webhook-url"})  # --url names the server to talk to



class TransitionQuery(Strict):
    gateway_id: Optional[str] = Field(None, max_length=128)
    since: Optional[datetime] = Field(None, description="ISO 8601; only transitions at or after it")
    limit: int = Field(100, ge=1, le=1000)

    @field_validator("since")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """As naive UTC, as times are stored; a time that has none (0001-01-01 at +14:00) is refused."""
        try:
            return parse_time(value)
        except OverflowError:
            raise ValueError("is out of range") from None


class TransitionList(BaseModel):
    items: list[TransitionOut]


EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES)),
                       AfterValidator(v.check_unique_items)]


class WebhookCreate(Strict):
    url: HttpUrl
    description: Optional[str] = Field(None, max_length=1000)
    events: EventTypes = Field(default_factory=lambda: list(WEBHOOK_EVENT_TYPES))
    active: bool = True


class WebhookUpdate(Partial, table="Webhook"):
    url: Optional[HttpUrl] = None
    description: Optional[str] = Field(None, max_length=1000)
    events: Optional[EventTypes] = None
    active: Optional[bool] = None


class WebhookOut(BaseModel):
    id: str
    organization_id: str
    url: str
    description: Optional[str]
    events: list[str]
    active: bool
    created_by: Optional[str]
    created_at: str
    updated_at: str


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="the signing secret: shown this once (X-NGM-Signature is "
                                    "HMAC-SHA256 of '<t>.<body>' with it)")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeliveryQuery(Strict):
    status: Optional[Literal["pending", "delivered", "failed"]] = None
    limit: int = Field(50, ge=1, le=1000)


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: Optional[str]
    last_status_code: Optional[int]
    last_error: Optional[str]
    delivered_at: Optional[str]
    created_at: str


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class TestQueued(BaseModel):
    webhook_id: str
    event_id: str
    event_type: str


def _one(node: str, node_id: str = "run"):
    return lambda: chain(_NODES, [(node, node_id, {})])


operation(
    resource="events", action="list", summary="List health transitions",
    description="Recorded status transitions, newest first. For a live stream use GET /api/v1/events "
                "(Server-Sent Events) or `ngm events tail`.",
    role="org_viewer", method="GET", path="/events/transitions", input_model=TransitionQuery,
    output_model=TransitionList,
    cli=CliSpec(columns=("occurred_at", "gateway_name", "from_health", "to_health", "from_status", "to_status",
                         "reason")),
    build_workflow=_one("ListTransitionsNode"), result=("run", "events"),
)

operation(
    resource="webhooks", action="create", summary="Register a webhook",
    description="Transitions are POSTed as JSON signed with HMAC-SHA256 (header X-NGM-Signature: t=...,v1=...), "
                "retried with exponential backoff. The secret is returned once.",
    role="org_admin", method="POST", path="/webhooks", status_code=201, input_model=WebhookCreate,
    output_model=WebhookWithSecret,
    cli=CliSpec(columns=("id", "url", "events", "secret"), rename={"url": "webhook-url"}),
    build_workflow=lambda: audited(_NODES, ("CreateWebhookNode", "create", {}), "webhook.create"),
    result=("create", "webhook"),
)

operation(
    resource="webhooks", action="list", summary="List webhooks", role="org_admin", method="GET",
    path="/webhooks", output_model=WebhookList, cli=_HOOK_CLI,
    build_workflow=_one("ListWebhooksNode"), result=("run", "webhooks"),
)

operation(
    resource="webhooks", action="get", summary="Show one webhook", role="org_admin", method="GET",
    path="/webhooks/{webhook_id}", id_param="webhook_id", output_model=WebhookOut, cli=_HOOK_CLI,
    build_workflow=_one("GetWebhookNode"), result=("run", "webhook"),
)

operation(
    resource="webhooks", action="update", summary="Change a webhook (partial update)", role="org_admin",
    method="PUT", path="/webhooks/{webhook_id}", id_param="webhook_id", partial=True, input_model=WebhookUpdate,
    output_model=WebhookOut, cli=_HOOK_CLI,
    build_workflow=lambda: audited(_NODES, ("UpdateWebhookNode", "patch", {}), "webhook.update"),
    result=("patch", "webhook"),
)

operation(
    resource="webhooks", action="delete", summary="Delete a webhook and its delivery records", role="org_admin",
    method="DELETE", path="/webhooks/{webhook_id}", id_param="webhook_id", status_code=204, cli=_HOOK_CLI,
    build_workflow=lambda: audited(_NODES, ("DeleteWebhookNode", "remove", {}), "webhook.delete"),
    result=("remove", "deleted"),
)

operation(
    resource="webhooks", action="rotate_secret", summary="Replace a webhook's signing secret",
    description="The new secret is returned once; deliveries are signed with it from now on.",
    role="org_admin", method="POST", path="/webhooks/{webhook_id}/rotate-secret", id_param="webhook_id",
    output_model=WebhookWithSecret, cli=CliSpec(columns=("id", "url", "secret")),
    build_workflow=lambda: audited(_NODES, ("RotateWebhookSecretNode", "rotate", {}), "webhook.rotate_secret"),
    result=("rotate", "webhook"),
)

operation(
    resource="webhooks", action="test", summary="Queue a test delivery (event webhook.test)", role="org_admin",
    method="POST", path="/webhooks/{webhook_id}/test", id_param="webhook_id", status_code=202,
    output_model=TestQueued, build_workflow=_one("TestWebhookNode"), result=("run", "queued"),
)

operation(
    resource="webhooks", action="deliveries", summary="List a webhook's deliveries and their results",
    role="org_admin", method="GET", path="/webhooks/{webhook_id}/deliveries", id_param="webhook_id",
    input_model=DeliveryQuery, output_model=DeliveryList,
    cli=CliSpec(columns=("id", "event_type", "status", "attempts", "last_status_code", "last_error",
                         "delivered_at", "next_attempt_at")),
    build_workflow=_one("ListDeliveriesNode"), result=("run", "deliveries"),
)

