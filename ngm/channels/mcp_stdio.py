"""`ngm mcp`: the registry's MCP tools over stdio, with the permissions of one API key.

In process against the configured database by default; with --url, each tool call goes to a running
server. Logs go to stderr: stdout carries the protocol.
"""

from __future__ import annotations

import anyio

from ngm.channels.mcp import build_mcp_server
from ngm.config import Settings
from ngm.workflows import load_operations


async def _serve(api_key: str, url: str | None) -> int:
    from mcp.server.stdio import stdio_server

    registry = load_operations()
    if url:
        from ngm.channels.client import RemoteClient

        client = RemoteClient(url, api_key)

        async def call(op, params, resource_id, _ctx):
            return await client.run(op, params, resource_id)

        closer = client.aclose
    else:
        from ngm.context import AppContext
        from ngm.workflows.executor import Executor

        ctx = await AppContext.open(Settings.from_env())
        try:
            await ctx.auth.authenticate(api_key)  # refuse to start with a bad key
        except BaseException:
            await ctx.close()
            raise
        executor = Executor(ctx, registry)

        async def call(op, params, resource_id, _ctx):
            principal = await ctx.auth.authenticate(api_key)  # per call: a revoked key stops working
            return await executor.run(op, principal, params, resource_id, source="json")

        closer = ctx.close
    server = build_mcp_server(registry, call)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await closer()
    return 0


def run_stdio(api_key: str, url: str | None = None) -> int:
    return anyio.run(_serve, api_key, url)
