"""stop_tasks ends background tasks even when a library swallowed the first cancellation, as Python 3.11's
asyncio.wait_for does (and redis-py waits on every command with it): `ngm serve` hung on SIGTERM."""

import asyncio

from ngm.tasks import ASK_AGAIN_AFTER, stop_tasks


async def loop_in_wait_for(inner_futures: list):
    """A background loop whose every step waits on an operation through wait_for, as redis-py's do."""
    while True:
        inner = asyncio.get_running_loop().create_future()
        inner_futures.append(inner)
        await asyncio.wait_for(inner, timeout=10)


async def operation_just_finished() -> tuple[asyncio.Task, list]:
    """The loop's operation has finished and wait_for has not seen it yet: a cancellation now is lost."""
    inner_futures: list = []
    task = asyncio.create_task(loop_in_wait_for(inner_futures))
    await asyncio.sleep(0)
    inner_futures[-1].set_result("reply")
    return task, inner_futures


def test_python_3_11_wait_for_swallows_a_cancellation_that_meets_a_finished_operation():
    async def main():
        task, inner_futures = await operation_just_finished()
        task.cancel()
        await asyncio.sleep(0.05)
        carried_on = not task.done() and len(inner_futures) == 2  # it went round its loop again
        task.cancel()  # a second request lands
        await asyncio.gather(task, return_exceptions=True)
        return carried_on, task.cancelled()

    carried_on, cancelled_at_last = asyncio.run(main())
    assert carried_on  # the race stop_tasks exists for (requires-python pins 3.11)
    assert cancelled_at_last


def test_stop_tasks_ends_a_task_that_swallowed_the_cancellation():
    async def main():
        task, _ = await operation_just_finished()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(stop_tasks([task]), timeout=5)  # its first cancel meets the race
        return task.cancelled(), asyncio.get_running_loop().time() - started

    cancelled, took = asyncio.run(main())
    assert cancelled
    assert took < ASK_AGAIN_AFTER * 4


def test_stop_tasks_waits_for_cleanup_and_keeps_errors_to_the_tasks():
    cleaned = []

    async def cleans_up():
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # a short cleanup is not interrupted by a second cancel
            cleaned.append(True)

    async def fails():
        raise ValueError("the job's own error")

    async def main():
        tasks = [asyncio.create_task(cleans_up()), asyncio.create_task(fails())]
        await asyncio.sleep(0.01)
        await stop_tasks(tasks)
        return [t.done() for t in tasks]

    assert asyncio.run(main()) == [True, True]
    assert cleaned == [True]
