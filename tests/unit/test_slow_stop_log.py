"""`ngm serve` still stopping long after SIGTERM: it logs every pending task, by name, with where it waits,
and exits at a deadline however stuck it is."""

import asyncio
import logging
import subprocess
import sys
import time

from ngm.server import _log_pending_tasks


def test_a_slow_stop_names_the_tasks_still_pending(caplog):
    async def waits_forever():
        await asyncio.Event().wait()

    async def main():
        task = asyncio.create_task(waits_forever(), name="ngm-stuck-job")
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="ngm.server"):
            _log_pending_tasks()
        task.cancel()

    asyncio.run(main())
    [record] = [r for r in caplog.records if r.name == "ngm.server"]
    assert "still stopping 15 s after the signal" in record.getMessage()
    assert "ngm-stuck-job" in record.getMessage() and "waits_forever" in record.getMessage()


def test_a_stop_that_hangs_ends_at_its_deadline():
    script = ("import threading; from ngm.config.logging import setup_logging; setup_logging('INFO'); "
              "from ngm.server import _exit_if_still_stopping; _exit_if_still_stopping(0.5); threading.Event().wait()")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "still not stopped 0.5 s after the signal: exiting" in done.stderr
    assert time.monotonic() - start < 20
