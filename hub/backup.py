"""``hub backup``: a consistent copy of the hub's SQLite database while it runs.

SQLite's online backup API copies the database page by page in steps,
letting the hub's writers go on between them (a step that meets a write
restarts from what changed); the copy is one consistent snapshot, WAL
included, written to a temporary file beside the target and renamed into
place only once complete — a backup that was interrupted never looks
finished. It is then checked with ``PRAGMA integrity_check``.

PostgreSQL is backed up with its own tools: ``pg_dump -Fc`` for a logical
copy (what :func:`postgres_advice` prints), or base backups with WAL
archiving for point-in-time recovery.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

PAGES_PER_STEP = 1024  # 4 MiB at a time: short enough for writers to slip in between


def sqlite_path(url: str) -> Path:
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("storage.url names no SQLite file")
    return Path(database)


def backup_sqlite(url: str, target: Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the database at ``url`` to ``target``; its size in bytes."""
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise FileNotFoundError(f"no database at {source_path}")
    target = target.resolve()
    if target == source_path.resolve():
        raise ValueError("the backup must not overwrite the database itself")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(partial)
    try:
        def step(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dst, pages=PAGES_PER_STEP, progress=step)
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        problems = [r[0] for r in dst.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise RuntimeError(f"the copy failed its integrity check: {problems[:5]}")
    except BaseException:
        dst.close()
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    dst.close()
    os.replace(partial, target)
    return target.stat().st_size


def postgres_advice(url: str) -> str:
    u = sa.engine.make_url(url)
    dsn = u.set(drivername="postgresql").render_as_string(hide_password=True)
    return (f"PostgreSQL: back it up with its own tools, e.g.\n"
            f"  pg_dump -Fc -f hub-$(date +%F).dump '{dsn}'\n"
            f"and restore with pg_restore -d <database> hub-….dump; for point-in-time recovery,\n"
            f"set up base backups with WAL archiving (pg_basebackup, archive_command).")
