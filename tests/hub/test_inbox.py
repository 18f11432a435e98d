"""The inbox writer on its own: what each submitter hears back, whatever the
batch held — new rows, rows already stored, the same key twice in one batch,
and batches larger than one statement takes."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from hub.inbox import InboxWriter, NewRawEvent, _chunks
from hub.records import raw_events
from hub.storage import Database


def _event(key: str) -> NewRawEvent:
    return NewRawEvent("site", key, f"sealed body of {key}", {"webhook-id": key})


async def _stored_keys(db: Database) -> list[str]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(raw_events.c.dedupe_key).order_by(raw_events.c.id))).scalars())


async def test_each_submitter_learns_what_was_new(db_url: str) -> None:
    db = Database(db_url)
    await db.migrate()
    inbox = InboxWriter(db, batch_delay=0.05)  # long enough that the submissions below share one batch
    inbox.start()
    try:
        first = await inbox.submit([_event("a"), _event("b")])
        assert (first.stored, first.duplicates) == (2, 0)
        # One batch: a fresh key, a key already stored, and a fresh key sent twice.
        results = await asyncio.gather(
            inbox.submit([_event("c")]),
            inbox.submit([_event("a"), _event("d")]),
            inbox.submit([_event("e")]),
            inbox.submit([_event("e")]),
        )
        assert [(r.stored, r.duplicates) for r in results[:2]] == [(1, 0), (1, 1)]
        # Both senders of "e" hear it was taken: one row, neither told "duplicate" of a row
        # that was not there before.
        assert [r.stored for r in results[2:]] == [1, 1]
        assert sorted(await _stored_keys(db)) == ["a", "b", "c", "d", "e"]
    finally:
        await inbox.close()
        await db.close()


async def test_a_batch_larger_than_one_statement(db_url: str) -> None:
    db = Database(db_url)
    await db.migrate()
    inbox = InboxWriter(db, batch_max=2000)
    inbox.start()
    try:
        keys = [f"k{i:04d}" for i in range(1337)]
        result = await inbox.submit([_event(k) for k in keys])
        assert (result.stored, result.duplicates) == (1337, 0)
        again = await inbox.submit([_event(k) for k in keys[::100]] + [_event("new")])
        assert (again.stored, again.duplicates) == (1, 14)
        assert await _stored_keys(db) == [*keys, "new"]
    finally:
        await inbox.close()
        await db.close()


def test_chunks_are_powers_of_two_in_order() -> None:
    rows = [(i,) for i in range(1337)]
    chunks = _chunks(rows)
    assert [len(c) for c in chunks] == [512, 512, 256, 32, 16, 8, 1]
    assert [r for c in chunks for r in c] == rows
    assert _chunks([]) == []
