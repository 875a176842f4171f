"""Run an operation for a principal: role check, input validation, then its Kailash workflow, in one
transaction when it changes anything.

Every channel (REST, CLI in process, MCP) calls `Executor.run`, so authorization and validation cannot
differ between channels. The role is checked before the input is even looked at (a viewer gets 403, not a
validation error). Input arrives in one of three forms: a JSON document (REST bodies, MCP arguments),
validated strictly (a boolean is not a number, a string is not a number); query strings (REST GETs), whose
values are text by nature and converted; or Python values the CLI has already converted from its options.

A workflow of one node (every read but route explain and ratelimits check) has nothing to compose: its node
runs directly, without the runtime's per-run bookkeeping (ContextNode.run_alone; 1.2 ms of a 3.7 ms list).

A changing operation's nodes share one transaction (bound with the AppContext for the workflow's run): the
change, the checks it depends on and its audit record commit together or not at all. A transaction the
database aborted for meeting another (a deadlock) is run again, up to three times.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ValidationError

from ngm.context import AppContext, bind, unbind
from ngm.errors import Forbidden, NgmError, Unavailable, ValidationFailed, find_cause
from ngm.models.database import TransactionConflict
from ngm.models.json_rows import plain
from ngm.nodes.auth.keys import Principal
from ngm.workflows.registry import Operation, Registry
from ngm.workflows.schema import ID_PATTERN, bad_text

log = logging.getLogger("ngm.executor")
_SKIP_LOC = {"body", "query", "path"}
Source = Literal["json", "query", "python"]
_ATTEMPTS = 3
_ID = re.compile(ID_PATTERN)


def _message(err: dict) -> str:
    kind, msg = err.get("type", ""), err.get("msg", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "is not valid JSON"
    return msg.removeprefix("Value error, ")


def field_errors(errors: Sequence[Any]) -> list[dict]:
    """Pydantic errors -> [{"field", "message"}]. Never includes the rejected input (it may be a secret)."""
    out = []
    for err in errors:
        if err.get("type") == "json_invalid":  # its loc is a byte offset, not a field
            out.append({"field": "body", "message": _message(err)})
            continue
        loc = [str(p) for p in err.get("loc", ())]
        if len(loc) > 1 and loc[0] in _SKIP_LOC:  # where a framework found it, not a field (a field may be `path`)
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "body", "message": _message(err)})
    return out


def validate_input(op: Operation, raw: Any, source: Source = "python") -> BaseModel | None:
    if op.input_model is None:
        if raw:
            extra = sorted(raw) if isinstance(raw, dict) else ["body"]
            raise ValidationFailed.from_fields([{"field": f, "message": "unknown field"} for f in extra])
        return None
    if isinstance(raw, op.input_model):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise ValidationFailed.from_fields([{"field": "body", "message": "must be a JSON object"}])
    if raw is None and source == "json" and any(f.is_required() for f in op.input_model.model_fields.values()):
        raise ValidationFailed.from_fields([{"field": "body", "message": "is required"}])
    unstorable = [{"field": str(k), "message": why} for k, v in (raw or {}).items() if (why := bad_text(v))]
    if unstorable:  # before the JSON round trip below, whose parser refuses unpaired surrogates as a whole
        raise ValidationFailed.from_fields(unstorable)
    try:
        if source == "json":  # JSON's own types: true is not 1, "50" is not 50
            return op.input_model.model_validate_json(json.dumps(raw or {}), strict=True)
        return op.input_model.model_validate(raw or {})
    except ValidationError as exc:
        raise ValidationFailed.from_fields(field_errors(exc.errors())) from None


def check_id(op: Operation, resource_id: Any) -> str:
    """Ids are ngm's own (hex, key_..., wh_...) or agent ids: nothing else can name a record."""
    if not isinstance(resource_id, str) or not _ID.fullmatch(resource_id):
        raise ValidationFailed.from_fields([{"field": op.id_param, "message": "must be an id: 1-128 letters, digits, "
                                                                          "'.', '_', '~' or '-'"}])
    return resource_id


def authorize(op: Operation, principal: Principal) -> None:
    if not principal.allows(op.role):
        raise Forbidden(f"{op.name} needs role {op.role} or stronger; this key has {principal.role}",
                        code="insufficient_role")


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
                  resource_id: str | None = None, *, source: Source = "python", json_text: bool = False) -> Any:
        """The operation's result; json_text: pages the database rendered may stay JSON text (JsonText, which
        the REST encoder writes as it is), else they are parsed."""
        if isinstance(op, str):
            op = self.operation(op)
        authorize(op, principal)
        inputs = {"organization_id": principal.organization_id, "actor": principal.actor()}
        if op.id_param:
            inputs["resource_id"] = check_id(op, resource_id)
        model = validate_input(op, params, source)
        inputs["params"] = model.model_dump(exclude_unset=op.partial) if model is not None else {}
        workflow = self.registry.workflow(op)
        if not op.in_transaction:
            results = await self._execute(op, workflow, inputs, None)
        else:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    async with self.ctx.database.transaction() as tx:
                        results = await self._execute(op, workflow, inputs, tx)
                    break
                except TransactionConflict:
                    if attempt == _ATTEMPTS:
                        raise Unavailable("the change met concurrent changes too often; try again",
                                          code="busy") from None
        node, key = op.result
        return results[node][key] if json_text else plain(results[node][key])

    async def _execute(self, op: Operation, workflow, inputs: dict, tx) -> dict:
        tokens = bind(self.ctx, tx)
        try:
            node = self.registry.sole_node(op)
            if node is not None:
                return {op.result[0]: await node.run_alone(inputs)}
            results, _ = await self.ctx.runtime.execute_workflow_async(workflow, inputs)
            return results
        except Exception as exc:
            known = find_cause(exc, TransactionConflict) or find_cause(exc, NgmError)
            if known is not None:
                raise known from None
            ref = uuid.uuid4().hex[:12]
            log.error("operation %s failed (ref %s)", op.name, ref, exc_info=exc)
            raise NgmError(f"internal error (ref {ref}); the server log has the details") from None
        finally:
            unbind(tokens)
