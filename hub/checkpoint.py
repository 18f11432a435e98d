"""SQLite's WAL checkpoints, away from the writers.

In WAL mode a commit appends the pages it changed to the ``-wal`` file and a
*checkpoint* copies them into the database file. Left to itself, SQLite runs
one inside whichever commit takes the WAL past 1,000 pages: with a pipeline
batch writing 1,000–2,500 pages, after nearly every batch — and now and then
inside intake's group commit, whose requests wait for it. Each of those
copies the same hot pages again (every table's last page, the indexes'
upper levels), batch after batch.

So the hub's connections leave automatic checkpoints to a far higher mark
(:data:`SAFETY_NET_PAGES`, for when nothing else checkpoints), and the
process holding the pipeline runs a PASSIVE checkpoint every
``storage.sqlite_checkpoint_every`` on a connection and a thread of its own:
it waits for no lock and makes nobody wait, and a hot page changed by ten
batches meanwhile is copied once. Measured: in process on a million-customer
database ~25 µs less CPU an event; 200,000-event bursts, alternated twice,
1,985 / 2,216 tickets/s against 1,679 / 1,935 with SQLite's own checkpoints
(docs/throughput.md). The WAL file grows larger meanwhile (~250 MB during a
burst, against ~140 MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hub.supervisor import wait_at_most

# wal_autocheckpoint on every hub connection: only if the checkpointer is not
# keeping up (or not running) does a commit copy pages itself. 40,000 pages of
# 4 KiB: a WAL of up to ~160 MB, ~10 s of a full-speed pipeline.
SAFETY_NET_PAGES = 40_000
SQLITE_AUTOCHECKPOINT = 1_000  # SQLite's own default: storage.sqlite_checkpoint_every = 0


class Checkpointer:
    """PASSIVE checkpoints of one SQLite file, every ``every`` seconds."""

    def __init__(self, path: str, every: float, synchronous: str = "full"):
        self.path = path
        self.every = every
        self.synchronous = synchronous
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the WAL, frames copied)
        self._wake = asyncio.Event()
        self._stopping = False

    async def run(self, beat: Callable[[], None]) -> None:
        """Wait, checkpoint, beat, until :meth:`stop`. An error ends the worker (the
        supervisor logs it and starts it again)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            await wait_at_most(self._wake, self.every)
            self.last = await loop.run_in_executor(self._thread, self._checkpoint)
            beat()

    def stop(self) -> None:
        """One last checkpoint, then :meth:`run` returns."""
        self._stopping = True
        self._wake.set()

    def _checkpoint(self) -> tuple[int, int, int]:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA busy_timeout=0")  # PASSIVE never waits anyway
            self._conn = conn
        try:
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            self._close()
            raise
        return int(busy), int(frames), int(copied)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)
