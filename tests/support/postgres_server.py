"""A PostgreSQL server of a test's own (Debian's postgresql package), to stop and start under load.

initdb refuses to run as root, so when the tests run as root the cluster belongs to the `postgres` user
(runuser). Listens on 127.0.0.1 only, trusts loopback, keeps its files in a folder of the test's own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from tests.support.standin import closed_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


class PrivatePostgres:
    def __init__(self):
        self.port = closed_port()
        self.folder = tempfile.mkdtemp(prefix="ngm-pg-")
        self.data = os.path.join(self.folder, "data")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/ngm"
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run([_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.start()

    def _run(self, args: list[str]) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, cwd=self.folder)

    def start(self) -> None:
        self._run([_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.folder, "log"), "-w", "-t", "30",
                   "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.folder}' "
                         "-c fsync=off -c max_connections=100", "start"])

    def stop(self) -> None:
        self._run([_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop"])

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
