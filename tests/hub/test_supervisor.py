"""The supervisor alone: a worker that raises is restarted with backoff and
shows as failing; one that stops beating shows as stalled (unless it said it
would wait); one that returns is not restarted."""

from __future__ import annotations

import asyncio

from hub.supervisor import Supervisor, Worker


async def test_a_failing_worker_is_restarted_and_reported_until_it_makes_progress() -> None:
    sup = Supervisor(stall_after=10)
    runs = 0

    async def flaky(w: Worker) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError("boom")
        w.beat()
        await asyncio.Event().wait()

    sup.spawn("flaky", flaky)
    await asyncio.sleep(0.1)
    assert len(sup.problems()) == 1 and sup.problems()[0].startswith("flaky failing: 1 times in a row, last RuntimeError")
    assert sup.stalled() == []  # failing fast is not being stuck
    for _ in range(40):
        await asyncio.sleep(0.1)
        if runs == 3:
            break
    await asyncio.sleep(0.05)
    assert runs == 3 and sup.problems() == []
    assert sup.workers["flaky"].restarts == 2
    await sup.stop(["flaky"], grace=0.1)


async def test_a_silent_worker_is_stalled_unless_excused() -> None:
    now = [0.0]
    sup = Supervisor(stall_after=5, clock=lambda: now[0])
    release = asyncio.Event()

    async def stuck(w: Worker) -> None:
        await release.wait()

    async def waiting(w: Worker) -> None:
        w.excuse(100)  # e.g. a platform's ban being waited out
        await release.wait()

    sup.spawn("stuck", stuck)
    sup.spawn("waiting", waiting)
    beat = sup.watch("gauges")
    await asyncio.sleep(0)
    now[0] = 6.0
    assert sup.stalled() == ["stuck stalled: no progress for 6 s", "gauges stalled: no progress for 6 s"]
    beat()
    assert sup.stalled() == ["stuck stalled: no progress for 6 s"]
    now[0] = 200.0
    assert [p.split(" ")[0] for p in sup.stalled()] == ["stuck", "waiting", "gauges"]
    release.set()
    await sup.stop(["stuck", "waiting"], grace=1)
    assert [p.split(" ")[0] for p in sup.stalled()] == ["gauges"]


async def test_a_worker_that_returns_is_not_restarted() -> None:
    sup = Supervisor()
    runs = 0

    async def once(w: Worker) -> None:
        nonlocal runs
        runs += 1

    sup.spawn("once", once)
    await asyncio.sleep(0.05)
    assert runs == 1 and sup.problems() == ["once ended"]
    await sup.stop(["once"], grace=0.1)
    assert sup.problems() == []
