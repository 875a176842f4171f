"""Minimal forwarders to compare ngm's router against (baselines, not product code).

    python bench/forwarders.py fastapi-httpx PORT UPSTREAM_PORT   # the common Python gateway design
    python bench/forwarders.py asgi-aiohttp PORT UPSTREAM_PORT    # uvicorn + raw ASGI + aiohttp's client
    python bench/forwarders.py asgi-bare PORT UPSTREAM_PORT       # uvicorn + raw ASGI, answers itself
    python bench/forwarders.py protocol-proxy PORT UPSTREAM_PORT  # asyncio protocols + httptools, nothing else
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

elif kind == "protocol-proxy":  # the floor of a Python proxy: parse, forward, answer; no auth, routing, logs
    import asyncio
    import socket

    import httptools
    import uvloop

    idle = []

    class Upstream(asyncio.Protocol):
        def __init__(self):
            self.parser, self.caller = httptools.HttpResponseParser(self), None

        def connection_made(self, transport):
            self.transport = transport
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send(self, caller, head):
            self.caller, self.headers, self.body = caller, [], []
            self.transport.write(head)

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_header(self, name, value):
            if name.lower() == b"content-type":
                self.headers.append(b"content-type: " + value + b"\r\n")

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            body = b"".join(self.body)
            head = b"HTTP/1.1 %d OK\r\ncontent-length: %d\r\n" % (self.parser.get_status_code(), len(body))
            caller, self.caller = self.caller, None
            idle.append(self)
            caller.transport.write(head + b"".join(self.headers) + b"\r\n" + body)

    class Server(asyncio.Protocol):
        def __init__(self):
            self.parser, self.url = httptools.HttpRequestParser(self), b""

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_url(self, url):
            self.url += url

        def on_message_complete(self):
            head = (self.parser.get_method() + b" " + self.url + b" HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: k\r\n"
                    b"content-length: 0\r\n\r\n")
            self.url = b""
            if idle:
                idle.pop().send(self, head)
            else:
                asyncio.get_running_loop().create_task(self.connect(head))

        async def connect(self, head):
            _, upstream_conn = await asyncio.get_running_loop().create_connection(Upstream, "127.0.0.1",
                                                                                  int(sys.argv[3]))
            upstream_conn.send(self, head)

    async def serve():
        server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())
    sys.exit(0)

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
