"""A raw TCP server on 127.0.0.1 whose answers are scripted byte by byte, for testing HTTP clients.

script(request_head: bytes, connection_number: int) -> list of actions:
  bytes (write them), float (sleep that long), "close" (close the connection), "hold" (never answer).
"""

from __future__ import annotations

import asyncio
import threading


class ScriptedServer:
    def __init__(self, script):
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = self.most_open = 0  # connections open now, and the most open at once
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer):
        self.connections += 1
        number = self.connections
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                for action in self.script(head, number):
                    if action == "close":
                        writer.close()
                        return
                    if action == "hold":
                        await asyncio.sleep(3600)
                    elif isinstance(action, float):
                        await asyncio.sleep(action)
                    else:
                        writer.write(action)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    def stop(self):
        async def shutdown():  # end the connections' handlers while their loop still runs
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
