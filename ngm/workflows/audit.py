"""Reading the audit trail: who changed what, when (never secret values)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field

from ngm.workflows.build import chain
from ngm.workflows.registry import CliSpec, operation
from ngm.workflows.schema import Offset, Strict


class AuditQuery(Strict):
    resource_type: Optional[str] = Field(None, max_length=64, description="e.g. gateway, api_key")
    resource_id: Optional[str] = Field(None, max_length=128)
    action: Optional[str] = Field(None, max_length=64, description="e.g. gateway.update")
    limit: int = Field(50, ge=1, le=500)
    offset: Offset = 0


class AuditEventOut(BaseModel):
    id: str
    organization_id: str
    actor_id: str
    actor_name: str
    action: str
    resource_type: str
    resource_id: str
    changes: dict[str, Any]
    occurred_at: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    total: int
    limit: int
    offset: int


operation(
    resource="audit", action="list", summary="List audit events",
    description="Changes in the organization, newest first; filter by resource_type, resource_id and action.",
    role="org_admin", method="GET", path="/audit",
    input_model=AuditQuery, output_model=AuditPage,
    cli=CliSpec(columns=("occurred_at", "actor_name", "action", "resource_type", "resource_id", "changes")),
    build_workflow=lambda: chain(["ngm.nodes.audit.nodes"], [("ListAuditEventsNode", "list", {})]),
    result=("list", "page"),
)
