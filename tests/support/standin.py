"""Stand-in gateways: real HTTP servers on 127.0.0.1 that answer like a Nexus gateway, or fail on purpose.

mode: "healthy" (200, Nexus health JSON), "slow" (answers after `delay`), "error" (503), "drop" (closes
the connection without answering), "redirect" (302 to `redirect_to`, which answers normally), "huge" (an endless body),
"broken_api" (/health answers 200, everything else 500).
`body` overrides the JSON answered, `answer_headers` are added to every answer. Modes may be changed while
running (flapping, recovery). POSTs are
recorded with their bodies and answered with `post_status` (a webhook receiver). tls=True serves HTTPS
with a self-signed certificate. Every request's method, path, headers and body are recorded.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def self_signed_cert() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp()
    cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up early (a capped body) is no error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StandIn:
    def __init__(self, mode: str = "healthy", delay: float = 0.0, *, body: dict | None = None,
                 redirect_to: str | None = None, post_status: int = 200, tls: bool = False,
                 answer_headers: list[tuple[str, str]] | None = None):
        self.mode, self.delay, self.body = mode, delay, body
        self.answer_headers = answer_headers or []  # (name, value) pairs sent with every answer, repeats kept
        self.redirect_to, self.post_status = redirect_to, post_status
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else head and body as two small writes stall on delayed ACKs (40 ms)
            wbufsize = 64 * 1024  # and write them as one

            def log_message(self, *args):  # keep test output clean
                pass

            def _record(self, payload: bytes = b"") -> None:
                with standin._lock:
                    standin.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                             "body": payload, "at": time.monotonic()})

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in [*{"Content-Type": "application/json", "Content-Length": str(len(body)),
                                      **(headers or {})}.items(), *standin.answer_headers]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server API)
                payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._record(payload)
                self._send(standin.post_status, json.dumps({"received": len(payload), "port": standin.port}).encode())

            def do_GET(self):  # noqa: N802
                self._record()
                mode = standin.mode
                if mode == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "slow":
                    time.sleep(standin.delay)
                if mode == "redirect" and self.path != standin.redirect_to:  # the target itself answers
                    self._send(302, b"", {"Location": standin.redirect_to})
                    return
                if mode == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    chunk = b" " * 65536
                    try:
                        for _ in range(10_000):  # 640 MB if anyone read it all
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                if mode == "broken_api" and not self.path.startswith("/health"):  # healthy, but the API fails
                    self._send(500, b'{"error": "boom"}')
                    return
                status = 503 if mode == "error" else 200
                answer = standin.body or {"status": "healthy" if status == 200 else "unhealthy",
                                          "workflows": {"chat": "healthy"}}
                self._send(status, json.dumps(answer).encode())

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self_signed_cert())
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def gets(self, since: float = 0.0) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "GET" and r["at"] >= since]

    def posts(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_PORTS_PER_PROCESS = 1500
_next_port = itertools.count()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens, for a server to start on or a connection to be refused.

    Taken from a range of this test process's own below the kernel's ephemeral ports (32768 and up): a port
    the kernel handed out and this process released could be handed to another pytest-xdist worker, or to an
    outgoing connection, before the server meant for it binds it."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 8
    base = 20000 + worker * _PORTS_PER_PROCESS
    for _ in range(_PORTS_PER_PROCESS):
        port = base + next(_next_port) % _PORTS_PER_PROCESS
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no use
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORTS_PER_PROCESS - 1}")
