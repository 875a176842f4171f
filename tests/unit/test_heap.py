"""Letting go of a large snapshot in slices (ngm/heap.py): the loop is served between slices."""

import asyncio

from ngm.heap import release


def test_release_empties_every_dict_and_serves_the_loop_between_slices():
    big, small = {i: object() for i in range(1005)}, {"a": 1}
    turns = []

    async def main():
        async def ticker():
            while big:
                turns.append(len(big))
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await release(big, small, budget=0.0)  # a turn of the loop after every hundred entries
        await tick

    asyncio.run(main())
    assert big == {} and small == {}
    assert len(turns) >= 10 and turns == sorted(turns, reverse=True)  # other tasks ran while it was emptied
