"""Stand-in gateways: real HTTP servers on 127.0.0.1 that answer like a Nexus gateway, or fail on purpose.

mode: "healthy" (200 JSON), "slow" (answers after `delay`), "error" (503), "drop" (closes the connection
without answering). Every request's path and headers are recorded so tests can check what was sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn:
    def __init__(self, mode: str = "healthy", delay: float = 0.0):
        self.mode = mode
        self.delay = delay
        self.requests: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server API)
                standin.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if standin.mode == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if standin.mode == "slow":
                    time.sleep(standin.delay)
                status = 503 if standin.mode == "error" else 200
                body = json.dumps({"status": "healthy" if status == 200 else "unhealthy"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
