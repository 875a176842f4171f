"""Minimal forwarders to compare ngm's router against (baselines, not product code).

    python bench/forwarders.py fastapi-httpx PORT UPSTREAM_PORT   # the common Python gateway design
    python bench/forwarders.py asgi-aiohttp PORT UPSTREAM_PORT    # uvicorn + raw ASGI + aiohttp's client
    python bench/forwarders.py asgi-bare PORT UPSTREAM_PORT       # uvicorn + raw ASGI, answers itself
"""

import sys

import uvicorn

kind, port, upstream = sys.argv[1], int(sys.argv[2]), f"http://127.0.0.1:{sys.argv[3]}"

if kind == "fastapi-httpx":
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    client = httpx.AsyncClient()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def forward(path: str, request: Request):
        upstream_request = client.build_request(request.method, f"{upstream}/{path}", content=await request.body(),
                                                headers={"x-api-key": "k"})
        response = await client.send(upstream_request, stream=True)
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                 headers={"content-type": response.headers.get("content-type", "")})

elif kind == "asgi-bare":  # what uvicorn alone costs: no upstream at all

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status": "healthy"}'})

else:
    import aiohttp

    session = None

    async def app(scope, receive, send):
        global session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session.request(scope["method"], upstream + scope["path"], data=body or None,
                                   headers={"x-api-key": "k"}) as response:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", response.headers.get("content-type", "").encode())]})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, loop="uvloop", http="httptools")
