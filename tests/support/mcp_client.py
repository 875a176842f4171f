"""A real MCP client (the `mcp` package) over stdio (`ngm mcp`) or streamable HTTP (/mcp)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.processes import NGM


class Tools:
    def __init__(self, session: ClientSession):
        self.session = session

    async def list(self):
        return (await self.session.list_tools()).tools

    async def call(self, name: str, args: dict | None = None) -> tuple[bool, dict]:
        result = await self.session.call_tool(name, args or {})
        return result.is_error, json.loads(result.content[0].text)


@asynccontextmanager
async def stdio_tools(env: dict, api_key: str, url: str | None = None):
    args = ["mcp", "--api-key", api_key] + (["--url", url] if url else [])
    params = StdioServerParameters(command=NGM, args=args, env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield Tools(session)


@asynccontextmanager
async def http_tools(base_url: str, api_key: str):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as http:
        async with streamable_http_client(base_url + "/mcp", http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield Tools(session)
