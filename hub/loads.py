"""Reading the rows a batch touches: one SELECT per table, shaped so every
lookup is an index search.

The pipeline asks for rows by a few keys at a time — identities by (kind,
value), tickets by (source, external id), orders by (channel, number), rows
by id — for a batch of hundreds of events. :class:`Where` says which rows as
*terms*: ``a = x AND b IN (…x's…)``, OR'ed. A row-value ``(a, b) IN (…)``
would be a full scan on SQLite, and ``a IN (…) AND b IN (…)`` searches every
combination; a term per distinct ``a`` (kinds, sources, channels: few) is one
index search per key asked for, on both databases. Callers still keep only
the exact pairs they asked for.

On PostgreSQL the terms become SQLAlchemy Core (rows to be changed locked
``FOR UPDATE``). On SQLite they are written as driver SQL and the values
decoded with the columns' own SQLAlchemy result processors, so a row reads
back exactly as Core would give it: building and compiling the expression
with its expanding ``IN`` lists of hundreds of values, and Core's row
objects, cost more than SQLite's index searches for a batch (measured on a
million-customer database: customers and their identities, 24–29 µs an event
through Core against 15 by driver SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hub.storage import Database


@dataclass(frozen=True, slots=True)
class Term:
    """``column IN values``, and each of ``equal`` (column, value) and of
    ``among`` (column, values) too."""

    column: str
    values: tuple[Any, ...]
    equal: tuple[tuple[str, Any], ...] = ()
    among: tuple[tuple[str, tuple[Any, ...]], ...] = ()


@dataclass(slots=True)
class Where:
    """The rows wanted: any term matches (an empty Where matches nothing)."""

    terms: list[Term] = field(default_factory=list)

    def values(self, column: str, values: Iterable[Any], *, among: dict[str, Iterable[Any]] | None = None) -> Where:
        """Rows whose ``column`` is one of ``values`` (and, with ``among``, whose
        other columns are each one of theirs)."""
        wanted = tuple(sorted(set(values)))
        if wanted:
            self.terms.append(Term(column, wanted, among=tuple(
                (c, tuple(sorted(set(vs)))) for c, vs in sorted((among or {}).items()))))
        return self

    def pairs(self, first: str, second: str, pairs: Iterable[tuple[Any, Any]]) -> Where:
        """Rows whose (``first``, ``second``) is one of ``pairs``; ``first`` has few
        distinct values, so one term each."""
        by_first: dict[Any, set[Any]] = {}
        for a, b in pairs:
            by_first.setdefault(a, set()).add(b)
        for a, bs in sorted(by_first.items()):
            self.terms.append(Term(second, tuple(sorted(bs)), ((first, a),)))
        return self

    def __bool__(self) -> bool:
        return bool(self.terms)


class Reader:
    """Selects rows of the hub's tables as plain dicts, in id order."""

    def __init__(self, conn: sa.Connection, db: Database):
        self.conn = conn
        self.db = db
        self.sqlite = db.is_sqlite

    def rows(self, table: sa.Table, where: Where, columns: tuple[str, ...] | None = None, *,
             for_update: bool = False) -> Iterator[dict[str, Any]]:
        """The rows of ``table`` matching ``where`` (``columns``: all by default).
        ``for_update``: rows this batch may change (locked on PostgreSQL)."""
        if not where:
            return iter(())
        names = columns or tuple(table.c.keys())
        if self.sqlite:
            return self._sqlite_rows(table, where, names)
        stmt = sa.select(*(table.c[n] for n in names)).where(sa.or_(*(
            sa.and_(*(table.c[c] == v for c, v in t.equal), table.c[t.column].in_(t.values),
                    *(table.c[c].in_(vs) for c, vs in t.among))
            for t in where.terms))).order_by(table.c.id)
        if for_update:
            stmt = self.db.for_update(stmt)
        return (dict(r._mapping) for r in self.conn.execute(stmt))

    def _sqlite_rows(self, table: sa.Table, where: Where, names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for t in where.terms:
            parts = [f"{c} = ?" for c, _ in t.equal]
            parts.append(f"{t.column} IN ({', '.join('?' * len(t.values))})")
            parts.extend(f"{c} IN ({', '.join('?' * len(vs))})" for c, vs in t.among)
            clauses.append(" AND ".join(parts))
            params.extend(v for _, v in t.equal)
            params.extend(t.values)
            for _, vs in t.among:
                params.extend(vs)
        sql = (f"SELECT {', '.join(names)} FROM {table.name} WHERE "
               f"{' OR '.join(f'({c})' for c in clauses)} ORDER BY id")
        decoders = _decoders(self.conn.dialect, table, names)
        for raw in self.conn.exec_driver_sql(sql, tuple(params)).fetchall():
            yield {name: (decode(value) if decode is not None and value is not None else value)
                   for (name, decode), value in zip(decoders, raw, strict=True)}


_DECODERS: dict[tuple[str, str, tuple[str, ...]], list[tuple[str, Any]]] = {}


def _decoders(dialect: sa.Dialect, table: sa.Table, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    """Each column's SQLAlchemy result processor on this dialect (None: taken as stored)."""
    key = (dialect.name, table.name, names)
    found = _DECODERS.get(key)
    if found is None:
        # The dialect's own type (SQLite's DATETIME parses text): what Core runs.
        found = _DECODERS[key] = [(n, table.c[n].type.dialect_impl(dialect).result_processor(dialect, None))
                                  for n in names]
    return found
