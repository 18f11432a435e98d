"""The windowed poll on its own: windows bounded by max_window and by now - lag,
pages read last to first, cursors that resume inside a window, and no gap when
records leave the window while it is read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.window_poll import Page, WindowedPoll
from hub.config import PolledSourceConfig
from hub.errors import SourceTransient
from hub.interfaces import UNREADABLE, InboundEvent

NOW = datetime(2026, 11, 11, 12, 0, 0, tzinfo=UTC)


class Store:
    """Records with a modified time; ``leave`` moves one past every window (a churn)."""

    def __init__(self, times: list[datetime]):
        self.modified = dict(enumerate(times))
        self.calls: list[tuple[datetime, datetime, int]] = []
        self.on_call: Any = None

    async def page(self, start: datetime, end: datetime, page_no: int, size: int) -> Page:
        self.calls.append((start, end, page_no))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        rows = sorted((t, rid) for rid, t in self.modified.items() if start <= t <= end)
        return Page([rid for _, rid in rows[(page_no - 1) * size: page_no * size]], len(rows))


async def event(i: Any) -> InboundEvent:
    return InboundEvent(body=str(i), document={"id": i})


def config(**kw: Any) -> PolledSourceConfig:
    return PolledSourceConfig(id="s", kind="test", **({"lag": 5, "overlap": 60, "page_size": 10,
                                                       "initial_lookback": 3 * 3600} | kw))


async def read_all(poll: WindowedPoll, cursor: Any = None) -> tuple[list[Any], list[Any]]:
    seen, cursors = [], []
    async for batch in poll.poll(cursor):
        seen += [e.document["id"] for e in batch.events]
        cursors.append(batch.cursor)
    return seen, cursors


async def test_a_backlog_is_read_window_by_window_last_page_first() -> None:
    store = Store([NOW - timedelta(minutes=170) + timedelta(seconds=37 * i) for i in range(250)])
    poll = WindowedPoll("w", config(max_window=3600), store.page, event, clock=lambda: NOW)
    seen, cursors = await read_all(poll)
    assert set(seen) == set(range(250))
    windows = sorted({(s, e) for s, e, _ in store.calls})
    assert len(windows) == 4 and all((e - s) <= timedelta(hours=1) for s, e in windows)
    # Each window starts `overlap` before the previous one ended: nothing indexed late is missed.
    assert all(b[0] == a[1] - timedelta(seconds=60) for a, b in zip(windows, windows[1:], strict=False))
    assert windows[-1][1] == NOW - timedelta(seconds=5)  # the last window ends lag before now
    first_window = [p for s, e, p in store.calls if (s, e) == windows[0]]
    assert first_window[0] == 1 and first_window[1:] == sorted(first_window[1:], reverse=True)
    assert first_window[-1] == 1  # page 1 again at the end
    since = datetime.fromisoformat(cursors[-1]["since"])
    assert since == NOW - timedelta(seconds=5 + 60)  # next poll starts overlap before the end


async def test_a_mid_window_cursor_resumes_at_its_page() -> None:
    store = Store([NOW - timedelta(minutes=30) + timedelta(seconds=20 * i) for i in range(55)])
    poll = WindowedPoll("w", config(), store.page, event, clock=lambda: NOW)
    batches = []
    async for batch in poll.poll(None):
        batches.append(batch)
        if len(batches) == 3:
            break
    cursor = batches[-1].cursor
    assert cursor["window"]["next_page"] == 4  # 6 pages: read 1, 6, 5; next is 4
    store.calls.clear()
    seen, _ = await read_all(poll, cursor)
    assert [p for _, _, p in store.calls] == [4, 3, 2, 1]
    assert set(seen) == set(range(0, 40))  # pages 4..1 of the window


async def test_records_leaving_the_window_while_paging_leave_no_gap() -> None:
    store = Store([NOW - timedelta(minutes=60) + timedelta(seconds=30 * i) for i in range(100)])
    moved: list[int] = []

    def churn(call: int) -> None:
        # Each call, the oldest record still in the window is modified (now: out of it).
        if call > 1:
            rid = min(store.modified, key=lambda k: store.modified[k])
            store.modified[rid] = NOW
            moved.append(rid)

    store.on_call = churn
    poll = WindowedPoll("w", config(), store.page, event, clock=lambda: NOW)
    seen, _ = await read_all(poll)
    missing = set(range(100)) - set(seen) - set(moved)
    assert not missing  # every record was read, or left the window (and is read next time)
    assert moved


async def test_a_record_the_connector_cannot_read_is_kept_for_quarantine_and_the_page_goes_on() -> None:
    store = Store([NOW - timedelta(minutes=30) + timedelta(seconds=i) for i in range(25)])

    async def picky(i: Any) -> InboundEvent:
        if i == 7:
            raise TypeError("a refund's tid is an object")  # what a malformed record does
        return await event(i)

    poll = WindowedPoll("w", config(), store.page, picky, clock=lambda: NOW)
    kept = []
    async for batch in poll.poll(None):
        kept += batch.events
    readable = {e.document["id"] for e in kept if e.document}
    bad = [e for e in kept if not e.document]
    assert readable == {i for i in range(25) if i != 7}
    assert bad and all(e.headers[UNREADABLE].startswith("the connector could not read this record: TypeError")
                       for e in bad)
    # Kept as it came, for a replay; read twice (windows overlap), it is one raw event by its body.
    assert {e.body for e in bad} == {orjson.dumps({"unreadable": 7}).decode()}


async def test_the_platform_failing_is_not_one_record() -> None:
    store = Store([NOW - timedelta(minutes=30)])

    async def down(i: Any) -> InboundEvent:
        raise SourceTransient("TOP taobao.refund.get: HTTP 502")

    poll = WindowedPoll("w", config(), store.page, down, clock=lambda: NOW)
    with pytest.raises(SourceTransient):
        await read_all(poll)
