"""A redis-server of a test's own (Debian's redis-server package), to configure, kill and bring back."""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.support.standin import closed_port, self_signed_cert


class PrivateRedis:
    """tls=True: TLS only (a self-signed certificate, clients not asked for one); `url` is rediss://."""

    def __init__(self, *args: str, password: str | None = None, db: int = 0, tls: bool = False):
        self.port = closed_port()
        self.password, self.args, self.tls = password, list(args), tls
        auth = f":{password}@" if password else ""
        self.url = f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{self.port}/{db}"
        self.proc = None
        if tls:
            cert, key = self_signed_cert()
            self.args += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no"]
        self.start()

    def start(self):
        extra = ["--requirepass", self.password] if self.password else []
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        self.proc = subprocess.Popen([shutil.which("redis-server"), *ports, "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", *extra, *self.args],
                                     stdout=subprocess.DEVNULL)
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        auth += ["--tls", "--insecure"] if self.tls else []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(self.port), *auth, "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()
