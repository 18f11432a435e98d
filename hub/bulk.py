"""A batch's writes: many rows per statement, rendered before the transaction on SQLite.

The pipeline's stages hand their writes to a :class:`Writes`:

- :class:`ConnectionWrites` runs each at once on a SQLAlchemy connection
  (PostgreSQL: the batch is planned and written in one transaction, and
  asyncpg encodes parameters in C);
- :class:`SqliteWrites` renders them *now* — each column once, the way its
  type would (naive UTC text with microseconds, JSON text, 0/1), into the
  driver's plain tuples — and runs them later, in :meth:`SqliteWrites.run`.
  The pipeline renders while it plans, on its read snapshot, so the SQLite
  write lock — which every acknowledgement of intake waits for — is held
  only for the driver's executemany calls and the commit. SQLAlchemy's own
  executemany would run every value through a bind processor in Python,
  which cost more than SQLite took to store the rows.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from hub.records import UTCDateTime


def sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: the hub stores aware UTC times only")
    return _utc_text(value)


@functools.lru_cache(maxsize=1024)
def _utc_text(value: datetime) -> str:
    # As SQLAlchemy's SQLite DATETIME. Cached: most times a batch writes are its one
    # ``now`` (every row's created/updated/at), and formatting was ~4 % of the
    # pipeline's CPU. Equal instants in other zones share the entry: the text is UTC.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _sqlite_bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


@functools.cache
def _renderer(table: sa.Table, columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """row → the driver's tuple: the columns picked in C, only times, JSON and flags rendered."""
    pick = operator.itemgetter(*columns)
    special: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(columns):
        kind = table.c[name].type
        if isinstance(kind, UTCDateTime):
            special.append((i, sqlite_time))
        elif isinstance(kind, sa.JSON):
            special.append((i, _sqlite_json))
        elif isinstance(kind, sa.Boolean):
            special.append((i, _sqlite_bool))
    single = len(columns) == 1

    def render(row: dict[str, Any]) -> tuple[Any, ...]:
        values = [pick(row)] if single else list(pick(row))
        for i, f in special:
            values[i] = f(values[i])
        return tuple(values)

    return render


Check = Callable[[int], None]  # given how many rows a statement changed; raises if that is wrong


class Writes(Protocol):
    """Where a stage's writes go: see the module docstring."""

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """INSERT every row (all with the same keys, as the first)."""

    def update(self, table: sa.Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]], *,
               only_if: tuple[str, Any] | None = None, check: Check | None = None) -> None:
        """UPDATE ``columns`` of every row, found by its ``id`` (with ``only_if``,
        only while that column holds that value); ``check`` is given how many
        rows changed where the driver says (SQLite; asyncpg's executemany does not)."""

    def reassign(self, table: sa.Table, column: str, old: Any, new: Any) -> None:
        """UPDATE table SET column = new WHERE column = old."""


@dataclass
class ConnectionWrites:
    """Writes run at once on a SQLAlchemy connection, in its transaction."""

    conn: sa.Connection

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        insert_many(self.conn, table, rows)

    def update(self, table: sa.Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]], *,
               only_if: tuple[str, Any] | None = None, check: Check | None = None) -> None:
        changed = update_many(self.conn, table, columns, rows, only_if=only_if)
        if check is not None and changed is not None:
            check(changed)

    def reassign(self, table: sa.Table, column: str, old: Any, new: Any) -> None:
        self.conn.execute(sa.update(table).where(table.c[column] == old).values({column: new}))


@dataclass
class SqliteWrites:
    """Writes rendered now into SQL and driver tuples, run later by :meth:`run`."""

    steps: list[tuple[str, list[tuple[Any, ...]], Check | None]] = field(default_factory=list)

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            columns = tuple(rows[0])
            render = _renderer(table, columns)
            self.steps.append((_insert_sql(table.name, columns), [render(r) for r in rows], None))

    def update(self, table: sa.Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]], *,
               only_if: tuple[str, Any] | None = None, check: Check | None = None) -> None:
        if rows:
            sql, params = _sqlite_update(table, columns, rows, only_if)
            self.steps.append((sql, params, check))

    def reassign(self, table: sa.Table, column: str, old: Any, new: Any) -> None:
        self.steps.append((f"UPDATE {table.name} SET {column} = ? WHERE {column} = ?", [(new, old)], None))

    def run(self, conn: sqlite3.Connection) -> None:
        """Every statement, in order, on ``conn`` (inside the caller's transaction)."""
        for sql, params, check in self.steps:
            changed = conn.executemany(sql, params).rowcount
            if check is not None:
                check(changed)


def insert_many(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT every row (all with the same keys, as the first)."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(sa.insert(table), list(rows))
        return
    columns = tuple(rows[0])
    render = _renderer(table, columns)
    conn.exec_driver_sql(_insert_sql(table.name, columns), [render(row) for row in rows])


def update_many(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...],
                rows: Sequence[dict[str, Any]], *, only_if: tuple[str, Any] | None = None) -> int | None:
    """UPDATE ``columns`` of every row, found by its ``id`` (and, with ``only_if``,
    only while that column holds that value). How many rows changed, where the
    driver says (SQLite does; asyncpg's executemany does not)."""
    if not rows:
        return 0
    if conn.dialect.name != "sqlite":
        stmt = _update_statement(table, columns)
        if only_if is not None:
            stmt = stmt.where(table.c[only_if[0]] == only_if[1])
        conn.execute(stmt, [{"_id": r["id"], **{k: r[k] for k in columns}} for r in rows])
        return None
    sql, params = _sqlite_update(table, columns, rows, only_if)
    return int(conn.exec_driver_sql(sql, params).rowcount)


def _sqlite_update(table: sa.Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]],
                   only_if: tuple[str, Any] | None) -> tuple[str, list[tuple[Any, ...]]]:
    render = _renderer(table, (*columns, "id"))
    if only_if is None:
        params = [render(row) for row in rows]
    else:
        params = [(*render(row), only_if[1]) for row in rows]
    return _update_sql(table.name, columns) + (f" AND {only_if[0]} = ?" if only_if else ""), params


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.cache
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"


@functools.cache
def _update_statement(table: sa.Table, columns: tuple[str, ...]) -> Any:
    return (sa.update(table).where(table.c.id == sa.bindparam("_id"))
            .values({k: sa.bindparam(k) for k in columns}))
