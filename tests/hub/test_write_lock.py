"""The SQLite write lock: one writer at a time, the inbox before everyone else."""

from __future__ import annotations

import asyncio

from hub.storage import WriteLock


async def test_an_urgent_waiter_goes_before_those_queued_earlier() -> None:
    lock = WriteLock()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(name: str, urgent: bool = False) -> None:
        async with lock.hold(urgent):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.create_task(hold("first"))
    await asyncio.sleep(0)
    later = [asyncio.create_task(hold(f"batch{i}")) for i in range(3)]
    await asyncio.sleep(0)
    inbox = asyncio.create_task(hold("inbox", urgent=True))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, inbox, *later)
    assert order == ["first", "inbox", "batch0", "batch1", "batch2"]


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_passes_it_on() -> None:
    lock = WriteLock()
    got: list[str] = []
    holder_release = asyncio.Event()

    async def holder() -> None:
        async with lock.hold():
            await holder_release.wait()

    async def waiter(name: str) -> None:
        async with lock.hold():
            got.append(name)

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    doomed = asyncio.create_task(waiter("doomed"))
    other = asyncio.create_task(waiter("other"))
    await asyncio.sleep(0)
    holder_release.set()
    await asyncio.sleep(0)  # the holder leaves: the lock is handed to "doomed"...
    doomed.cancel()         # ...which is cancelled before it runs
    await asyncio.gather(h, other)
    assert got == ["other"]
    async with asyncio.timeout(1):
        async with lock.hold():  # and nothing is left holding it
            pass
