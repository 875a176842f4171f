"""Stopping background tasks for sure.

Python 3.11's asyncio.wait_for swallows a cancellation that arrives just after the operation it waits for
has finished and before it has noticed (CPython gh-86296, fixed in 3.12): the caller goes on as if it had
not been cancelled. redis-py sends every command through wait_for, so a loop cancelled during a Redis round
trip could carry on; the lifespan then waited for it forever and `ngm serve` hung on SIGTERM until its hard
exit (a worker stopped 0.3 s after it started hung 1 time in 3). stop_tasks asks again until each task ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

ASK_AGAIN_AFTER = 0.5  # seconds: a task's own cleanup on cancellation is quicker than this


async def stop_tasks(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again any that carried on."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=ASK_AGAIN_AFTER)
    await asyncio.gather(*tasks, return_exceptions=True)  # their errors are theirs to log; retrieved here
