"""A redis-server of a test's own (Debian's redis-server package), to configure, kill and bring back."""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.support.standin import closed_port


class PrivateRedis:
    def __init__(self, *args: str, password: str | None = None, db: int = 0):
        self.port = closed_port()
        self.password, self.args = password, list(args)
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/{db}"
        self.proc = None
        self.start()

    def start(self):
        extra = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", *extra, *self.args],
                                     stdout=subprocess.DEVNULL)
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
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
