"""Start the real `ngm` command: the server as a process, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.standin import closed_port

REDIS_URL = os.environ.get("NGM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

NGM = str(Path(sys.executable).parent / "ngm")


# every ngm the tests start calls loopback addresses only: a gateway named gw.example.com is refused unresolved
LOOPBACK_ONLY = "127.0.0.0/8,::1/128"


def ngm_env(data_dir: Path, database_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGM_")}
    env.update({"NGM_DATA_DIR": str(data_dir), "NGM_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1",
                "NGM_OUTBOUND_ONLY": LOOPBACK_ONLY})
    env.update(extra)
    return env


class ServerProcess:
    def __init__(self, env: dict, log_path: Path, port: int | None = None, args: tuple = ()):
        self.port = port or closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([NGM, "serve", "--port", str(self.port), *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ngm serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"ngm serve not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def run_cli(args: list[str], env: dict, input: str | None = None, timeout: float = 60.0):
    return subprocess.run([NGM, *args], env=env, capture_output=True, text=True, input=input, timeout=timeout)


def cli_json(args: list[str], env: dict, input: str | None = None):
    result = run_cli([*args, "--json"], env, input)
    assert result.returncode == 0, f"ngm {' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return json.loads(result.stdout)
