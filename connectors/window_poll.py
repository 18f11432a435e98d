"""Reading a platform's "modified between start and end" list API without gaps.

Taobao's refund list and JD's after-sales list both page a result set
filtered by modified time. Paging forwards through a set that changes under
you skips records: when a record on a page already read is modified, it leaves
the window, everything after it shifts one place up, and the first record of
the next page slides onto the page just read. So each window is read like this:

1. The window's end is fixed in the past (``now - lag``): records modified
   while we page get a newer time and leave the window; none can enter it.
2. Page 1 gives the total; the remaining pages are read **from the last to
   the first**, page 1 again at the end. A record leaving the window shifts
   only records *behind* it onto pages still unread — a duplicate read at
   worst (dropped by the dedupe key), never a gap.
3. Every page's events are committed with a cursor that names the next page,
   so a restart resumes inside the window; the window done, the cursor moves
   to its end minus ``overlap`` (records the platform indexes late).

A backlog longer than ``max_window`` is read window by window; a record the
connector cannot read is kept for quarantine (:func:`each_event`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from hub.casts import SHANGHAI
from hub.config import PolledSourceConfig
from hub.errors import SourceError
from hub.interfaces import InboundEvent, PollBatch
from hub.polling import unreadable, window_end
from hub.records import utcnow
from hub.redaction import error_summary

log = structlog.get_logger("connectors.window_poll")

PLATFORM_TIME = "%Y-%m-%d %H:%M:%S"


def platform_time(dt: datetime) -> str:
    """Taobao and JD take ``yyyy-MM-dd HH:mm:ss`` in Beijing time (GMT+8)."""
    return dt.astimezone(SHANGHAI).strftime(PLATFORM_TIME)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int


# (start, end, page number, page size) → one page of the window
FetchPage = Callable[[datetime, datetime, int, int], Awaitable[Page]]
# one item of a page → the event to store, or None (may call the platform again, e.g. for detail)
ToEvent = Callable[[Any], Awaitable[InboundEvent | None]]


async def each_event(items: list[Any], to_event: ToEvent) -> list[InboundEvent]:
    """The events of a page's items, one at a time: an item the connector cannot
    read (a field of the wrong type, say) is kept as an unreadable event for the
    pipeline to quarantine, so one bad record never holds back its page — nor,
    read again and again, every later one. The platform failing is another
    matter (a SourceError): the page is read again."""
    out = []
    for item in items:
        try:
            event = await to_event(item)
        except SourceError:
            raise
        except Exception as err:  # noqa: BLE001 - one record is one unit of failure
            log.warning("record not readable; kept for quarantine", error=error_summary(err))
            event = unreadable(item, err)
        if event is not None:
            out.append(event)
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class WindowedPoll:
    """A :class:`~hub.interfaces.PollStream` over a modified-time list API."""

    backfill = True  # any past window can be read again

    def __init__(self, name: str, config: PolledSourceConfig, fetch_page: FetchPage,
                 to_event: ToEvent, *, clock: Callable[[], datetime] = utcnow):
        self.name = name
        self.interval = config.poll_every
        self.config = config
        self.fetch_page = fetch_page
        self.to_event = to_event
        self.clock = clock

    def _advance(self, since: datetime, end: datetime) -> datetime:
        # Step back by the overlap, but always forward overall.
        back = min(self.config.overlap, (end - since).total_seconds() / 2)
        return end - timedelta(seconds=back)

    async def poll(self, cursor: Any) -> AsyncIterator[PollBatch]:
        cursor = cursor or {}
        now = self.clock()
        since = (_parse(cursor["since"]) if cursor.get("since")
                 else (now - timedelta(seconds=self.config.initial_lookback)).replace(microsecond=0))
        win = cursor.get("window")
        size = self.config.page_size
        while True:
            limit = window_end(self.clock(), self.config.lag)
            if win is None:
                end = min(limit, since + timedelta(seconds=self.config.max_window))
                if end <= since:
                    return
                first = await self.fetch_page(since, end, 1, size)
                pages = max(1, math.ceil(first.total / size))
                events = await each_event(first.items, self.to_event)
                if pages == 1:
                    since = self._advance(since, end)
                    yield PollBatch(events, {"since": _iso(since)}, watermark=end)
                else:
                    win = {"start": _iso(since), "end": _iso(end), "pages": pages, "next_page": pages}
                    yield PollBatch(events, {"since": _iso(since), "window": dict(win)})
            else:
                end = _parse(win["end"])
            while win is not None:
                start = _parse(win["start"])
                page_no = int(win["next_page"])
                page = await self.fetch_page(start, end, page_no, size)
                events = await each_event(page.items, self.to_event)
                if page_no <= 1:
                    since = self._advance(start, end)
                    win = None
                    yield PollBatch(events, {"since": _iso(since)}, watermark=end)
                else:
                    win = dict(win, next_page=page_no - 1)
                    yield PollBatch(events, {"since": _iso(start), "window": dict(win)})
            if end >= limit:
                return  # caught up with now
