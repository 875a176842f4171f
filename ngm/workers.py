"""`ngm serve --workers N`: N server processes on one port, kept running by this supervisor.

Why processes: one Python process serves the forwarding router on one core (bench/router_throughput.py
measures it); nginx, the baseline, runs a worker per core. Each worker binds the port with SO_REUSEPORT,
so the kernel spreads new connections among them and a worker that dies takes only its own connections.

Workers are instances like separate `ngm serve` processes: with NGM_REDIS_URL they share rate limits,
in-flight counts (least connections, draining), traffic figures, the monitor's lease and events. Without
Redis each worker would count alone, so more than one worker needs it.

The supervisor runs no app code: it starts the first worker alone (it creates the key file and the schema
on a new machine), then the others, restarts a worker that exits, and on SIGTERM/SIGINT stops them all
gracefully (each drains its requests) and exits 0.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time

log = logging.getLogger("ngm.server")
STOP_SECONDS = 30.0  # a worker's graceful stop (10 s drain) and cleanup, then it is killed
FAILED_STARTS = 3  # a slot whose replacements exit before serving this many times in a row: give up


class Worker:
    """One `python -m ngm.server` process; it writes a byte to its pipe once it serves."""

    def __init__(self, slot: int, host: str, port: int):
        self.slot = slot
        read_end, write_end = os.pipe()
        # Its own session: a terminal's Ctrl-C reaches the supervisor only, which stops the workers once
        # (a second signal would make uvicorn skip the drain).
        self.proc = subprocess.Popen([sys.executable, "-m", "ngm.server", host, str(port), str(write_end),
                                      str(os.getpid())],
                                     pass_fds=(write_end,), start_new_session=True)
        os.close(write_end)
        self.pipe: int | None = read_end
        self.ready = False

    def poll_ready(self, timeout: float = 0.0) -> bool:
        if self.pipe is None:
            time.sleep(timeout)
        elif select.select([self.pipe], [], [], timeout)[0]:
            self.ready = os.read(self.pipe, 1) == b"1"
            os.close(self.pipe)  # one byte, or the end of the pipe: the worker died before serving
            self.pipe = None
        return self.ready

    def exited(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None


class Supervisor:
    def __init__(self, host: str, port: int, count: int):
        self.host, self.port, self.count = host, port, count
        self.workers: list[Worker] = []
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            code = self._start()
            if code is None:
                log.info("%d workers serving on http://%s:%d (pids %s)", self.count, self.host, self.port,
                         ", ".join(str(w.proc.pid) for w in self.workers))
                code = self._keep_running()
            return self._stop_all(code)
        finally:
            for w in self.workers:
                w.close()

    def _start(self) -> int | None:
        """The first worker alone, then the rest together; a worker that exits before serving stops it all
        with its exit code (2: configuration, such as the encryption keys; 1: the port, for one)."""
        for batch in ([0], range(1, self.count)):
            started = [Worker(slot, self.host, self.port) for slot in batch]
            self.workers += started
            while not all(w.ready for w in started):
                if self.stopping:
                    return 0
                for w in started:
                    if not w.ready and not w.poll_ready(0.1 / len(started)) and w.exited() is not None:
                        code = w.exited()
                        assert code is not None  # checked just above
                        log.error("worker %d exited with %d before serving", w.slot, code)
                        return code if code > 0 else 1  # killed by a signal (negative): still a failure
        return None

    def _keep_running(self) -> int:
        failed_starts = [0] * self.count
        while not self.stopping:
            time.sleep(0.2)
            for i, w in enumerate(self.workers):
                w.poll_ready()
                if w.ready:
                    failed_starts[i] = 0
                code = w.exited()
                if code is None or self.stopping:
                    continue
                if not w.ready:
                    failed_starts[i] += 1
                    if failed_starts[i] >= FAILED_STARTS:
                        log.error("worker %d exited before serving %d times in a row: stopping", i, FAILED_STARTS)
                        return 1
                log.warning("worker %d (pid %d) exited with %d: starting another", i, w.proc.pid, code)
                w.close()
                self.workers[i] = Worker(i, self.host, self.port)
        return 0

    def _stop_all(self, code: int) -> int:
        for w in self.workers:
            w.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        clean = True
        for w in self.workers:
            try:
                worker_code = w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) still running after %.0f s: killed", w.slot, w.proc.pid, STOP_SECONDS)
                w.proc.kill()
                worker_code = w.proc.wait()
            # -SIGTERM: ours reached a worker still starting, before it could handle it
            clean = clean and worker_code in (0, -signal.SIGTERM)
        log.info("stopped %d workers", len(self.workers))
        return code or (0 if clean else 1)


def supervise(host: str, port: int, count: int) -> int:
    from ngm.config import Settings
    from ngm.config.logging import setup_logging

    settings = Settings.from_env()
    setup_logging(settings.log_level)
    if not settings.redis_url:
        log.error("--workers %d needs NGM_REDIS_URL: without it each worker would keep its own rate-limit counts, "
                  "in-flight counts and traffic figures", count)
        return 2
    return Supervisor(host, port, count).run()
