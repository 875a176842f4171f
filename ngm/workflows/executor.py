"""Run an operation for a principal: role check, input validation, then its Kailash workflow.

Every channel (REST, CLI in process, MCP) calls `Executor.run`, so authorization and validation cannot
differ between channels.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError

from ngm.context import AppContext, bind, unbind
from ngm.errors import Forbidden, NgmError, ValidationFailed, find_ngm_error
from ngm.nodes.auth.keys import Principal
from ngm.workflows.registry import Operation, Registry

log = logging.getLogger("ngm.executor")
_SKIP_LOC = {"body", "query", "path"}


def _message(err: dict) -> str:
    kind, msg = err.get("type", ""), err.get("msg", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "is not valid JSON"
    return msg.removeprefix("Value error, ")


def field_errors(errors: list[dict]) -> list[dict]:
    """Pydantic errors -> [{"field", "message"}]. Never includes the rejected input (it may be a secret)."""
    out = []
    for err in errors:
        if err.get("type") == "json_invalid":  # its loc is a byte offset, not a field
            out.append({"field": "body", "message": _message(err)})
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in _SKIP_LOC]
        out.append({"field": ".".join(loc) or "body", "message": _message(err)})
    return out


def validate_input(op: Operation, raw: Any) -> BaseModel | None:
    if op.input_model is None:
        if raw:
            extra = sorted(raw) if isinstance(raw, dict) else ["body"]
            raise ValidationFailed.from_fields([{"field": f, "message": "unknown field"} for f in extra])
        return None
    if isinstance(raw, op.input_model):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise ValidationFailed.from_fields([{"field": "body", "message": "must be a JSON object"}])
    try:
        return op.input_model.model_validate(raw or {})
    except ValidationError as exc:
        raise ValidationFailed.from_fields(field_errors(exc.errors())) from None


def check_id(op: Operation, resource_id: Any) -> str:
    if not isinstance(resource_id, str) or not resource_id or len(resource_id) > 128:
        raise ValidationFailed.from_fields([{"field": op.id_param, "message": "must be a non-empty id"}])
    return resource_id


class Executor:
    def __init__(self, ctx: AppContext, registry: Registry | None = None):
        from ngm.workflows import load_operations

        self.ctx = ctx
        self.registry = registry or load_operations()

    def operation(self, name: str) -> Operation:
        op = self.registry.get(name)
        if op is None:
            raise ValidationFailed(f"unknown operation {name}", field="operation")
        return op

    async def run(self, op: Operation | str, principal: Principal, params: Any = None,
                  resource_id: str | None = None) -> Any:
        if isinstance(op, str):
            op = self.operation(op)
        if not principal.allows(op.role):
            raise Forbidden(f"{op.name} needs role {op.role} or stronger; this key has {principal.role}",
                            code="insufficient_role")
        model = validate_input(op, params)
        inputs = {
            "organization_id": principal.organization_id,
            "actor": principal.actor(),
            "params": (model.model_dump(exclude_unset=op.partial) if model is not None else {}),
        }
        if op.id_param:
            inputs["resource_id"] = check_id(op, resource_id)
        workflow = self.registry.workflow(op)
        token = bind(self.ctx)
        try:
            results, _ = await self.ctx.runtime.execute_workflow_async(workflow, inputs)
        except Exception as exc:
            known = find_ngm_error(exc)
            if known is not None:
                raise known from None
            ref = uuid.uuid4().hex[:12]
            log.error("operation %s failed (ref %s)", op.name, ref, exc_info=exc)
            raise NgmError(f"internal error (ref {ref}); the server log has the details") from None
        finally:
            unbind(token)
        node, key = op.result
        return results[node][key]
