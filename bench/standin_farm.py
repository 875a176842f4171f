"""Many stand-in gateways in one process: `python bench/standin_farm.py HEALTHY SLOW DELAY_MS`.

Listens on HEALTHY + SLOW ports of 127.0.0.1 (a minimal HTTP/1.1 responder on uvloop, so the farm costs
little CPU next to the monitor under test), prints the ports as one JSON line, and runs until killed.
"""

import asyncio
import json
import sys

BODY = b'{"status":"healthy","workflows":{"chat":"healthy"}}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode()
            + b"\r\n\r\n" + BODY)


class Responder(asyncio.Protocol):
    delay = 0.0

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._answer)
            else:
                self._answer()

    def _answer(self):
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


class Slow(Responder):
    pass


async def main(healthy: int, slow: int, delay_ms: float) -> None:
    Slow.delay = delay_ms / 1000
    loop = asyncio.get_running_loop()
    ports = {"healthy": [], "slow": []}
    for kind, cls, n in (("healthy", Responder, healthy), ("slow", Slow, slow)):
        for _ in range(n):
            server = await loop.create_server(cls, "127.0.0.1", 0, backlog=64)
            ports[kind].append(server.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
