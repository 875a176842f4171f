"""MCP tools derived from the operation registry, served over stdio (`ngm mcp`) and streamable HTTP (/mcp).

Built on the low-level `mcp.server.Server` so each tool's input schema is exactly its operation's JSON
schema, and errors come back as structured error results naming the field.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

import mcp_types as types
from mcp.server import Server

from ngm import __version__
from ngm.errors import NgmError
from ngm.workflows.registry import Operation, Registry

log = logging.getLogger("ngm.mcp")

# (operation, params, resource id, request context) -> result
Caller = Callable[[Operation, dict | None, str | None, Any], Awaitable[Any]]


def _tool(op: Operation) -> types.Tool:
    read_only = op.method == "GET" or op.reads_only
    return types.Tool(
        name=op.name,
        description=f"{op.summary}. {op.description}".strip() + f" Requires role {op.role} or stronger.",
        input_schema=op.tool_schema(),
        annotations=types.ToolAnnotations(
            title=op.summary, read_only_hint=read_only, destructive_hint=op.method == "DELETE",
            idempotent_hint=read_only or op.method in ("PUT", "DELETE"),
            open_world_hint=op.name == "gateways_check",  # it calls the gateway's own address
        ),
    )


def _result(payload: Any, is_error: bool = False) -> types.CallToolResult:
    structured = payload if isinstance(payload, dict) else {"result": payload}
    return types.CallToolResult(content=[types.TextContent(text=json.dumps(payload, indent=2, ensure_ascii=False))],
                                structured_content=structured, is_error=is_error)


def build_mcp_server(registry: Registry, call: Caller) -> Server:
    tools = [_tool(op) for op in registry]

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        op = registry.get(params.name)
        if op is None:
            return _result(NgmError(f"unknown tool {params.name}", code="unknown_tool", field="name").to_body(), True)
        args = dict(params.arguments or {})
        resource_id = args.pop(op.id_param, None) if op.id_param else None
        try:
            result = await call(op, args or None, resource_id, ctx)
        except NgmError as exc:
            return _result({"status": exc.status, **exc.to_body()}, True)
        except Exception:
            log.exception("tool %s failed", op.name)
            return _result({"status": 500, **NgmError("internal error; see the server log").to_body()}, True)
        if result is None:
            result = {"ok": True}
        return _result(result)

    return Server("ngm", version=__version__, instructions=(
        "Nexus Gateway Manager: manage an organization's Nexus gateways. Tools are named <resource>_<action>; "
        "what a tool may do follows the role of the API key this server was given."),
        on_list_tools=list_tools, on_call_tool=call_tool)


def principal_of_request(ctx):
    """The principal the HTTP middleware authenticated for this MCP request."""
    request = getattr(ctx, "request", None)
    principal = getattr(getattr(request, "state", None), "principal", None) if request is not None else None
    if principal is None:
        from ngm.errors import Unauthorized

        raise Unauthorized("missing API key")
    return principal
