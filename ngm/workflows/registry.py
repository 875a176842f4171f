"""One declaration per operation; the REST route, CLI command and MCP tool are all derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel


@dataclass(frozen=True)
class CliSpec:
    columns: tuple[str, ...] = ()  # table columns for people (lists and single records)
    rename: dict[str, str] = field(default_factory=dict)  # input field -> option name, e.g. api_key -> gateway-api-key
    confirm_hint: str = ""


@dataclass(frozen=True)
class Operation:
    resource: str  # "gateways": the CLI group, the REST resource, the MCP tool prefix
    action: str  # "create"
    summary: str
    role: str  # the weakest role allowed to run it
    method: str  # HTTP method
    path: str  # below /api/v1, e.g. "/gateways/{gateway_id}"
    build_workflow: Callable[[], Any]  # returns a kailash Workflow; imported lazily
    result: tuple[str, str]  # (node id, output key) holding the answer
    input_model: type[BaseModel] | None = None  # body for POST/PUT, query for GET/DELETE
    id_param: str | None = None  # the path parameter naming the record, e.g. gateway_id
    output_model: Any = None  # response schema; None for 204
    status_code: int = 200
    description: str = ""
    partial: bool = False  # only the fields sent are applied (PUT as partial update)
    cli: CliSpec = field(default_factory=CliSpec)
    transaction: bool | None = None  # run in one transaction (default: every method but GET changes something)
    reads_only: bool = False  # a POST whose body is a question (route explain, ratelimits check): changes nothing

    @property
    def name(self) -> str:
        return f"{self.resource}_{self.action}"

    @property
    def cli_command(self) -> str:
        return self.action.replace("_", "-")

    @property
    def http_path(self) -> str:
        return "/api/v1" + self.path

    @property
    def in_transaction(self) -> bool:
        return self.transaction if self.transaction is not None else self.method != "GET"

    @property
    def input_in_query(self) -> bool:
        return self.method in ("GET", "DELETE")

    def tool_schema(self) -> dict:
        """JSON schema of every input: the id parameter plus the input model's fields."""
        schema: dict[str, Any] = (self.input_model.model_json_schema() if self.input_model
                                  else {"type": "object", "properties": {}})
        schema = dict(schema)
        schema.setdefault("type", "object")
        props = dict(schema.get("properties", {}))
        required = list(schema.get("required", []))
        if self.id_param:
            props = {self.id_param: {"type": "string", "description": f"id of the {self.resource[:-1]}"}, **props}
            required.insert(0, self.id_param)
        schema["properties"] = props
        if required:
            schema["required"] = required
        schema.pop("title", None)
        return schema


class Registry:
    def __init__(self):
        self._ops: dict[str, Operation] = {}
        self._workflows: dict[str, Any] = {}
        self._sole: dict[str, Any] = {}

    def add(self, op: Operation) -> Operation:
        if op.name in self._ops:
            raise ValueError(f"operation {op.name} declared twice")
        self._ops[op.name] = op
        return op

    def __iter__(self):
        return iter(self._ops.values())

    def __len__(self):
        return len(self._ops)

    def get(self, name: str) -> Operation | None:
        return self._ops.get(name)

    def workflow(self, op: Operation):
        """The built workflow of an operation, built once (graphs are stateless)."""
        wf = self._workflows.get(op.name)
        if wf is None:
            wf = self._workflows[op.name] = op.build_workflow()
        return wf

    def sole_node(self, op: Operation):
        """The node of an operation whose workflow is one node (run directly, see ContextNode.run_alone), else
        None."""
        if op.name not in self._sole:
            from ngm.nodes.base import ContextNode

            nodes = list(self.workflow(op)._node_instances.values())
            self._sole[op.name] = nodes[0] if len(nodes) == 1 and isinstance(nodes[0], ContextNode) else None
        return self._sole[op.name]


REGISTRY = Registry()


def operation(**kwargs) -> Operation:
    return REGISTRY.add(Operation(**kwargs))
