"""Many rows in one statement, without per-value type processing on SQLite.

SQLAlchemy's executemany runs every value through its type's bind processor
in Python — for the pipeline's rows (a dozen columns, half of them times or
JSON) that cost more than SQLite took to store them. On SQLite these helpers
render each column once the way the column type would (naive UTC text with
microseconds, JSON text, 0/1) and hand the driver plain tuples; on
PostgreSQL they go through SQLAlchemy (asyncpg encodes parameters in C).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from hub.records import UTCDateTime


def sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: the hub stores aware UTC times only")
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"  # as SQLAlchemy's SQLite DATETIME


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
    render = _renderer(table, (*columns, "id"))
    if only_if is None:
        params = [render(row) for row in rows]
    else:
        params = [(*render(row), only_if[1]) for row in rows]
    sql = _update_sql(table.name, columns) + (f" AND {only_if[0]} = ?" if only_if else "")
    return int(conn.exec_driver_sql(sql, params).rowcount)


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
