"""How much waits: raw events by state, pushes by destination and state.

Counted along the indexes (raw events by state; pushes by destination and
state), one range each — never a scan of what has been done, which only
grows. What the gauges in ``/metrics``, ``hub status`` and the admin API show.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from hub.records import outbox, raw_events
from hub.storage import Database

_RAW_IN_STATE = sa.select(sa.func.count()).select_from(raw_events).where(
    raw_events.c.state == sa.bindparam("state"))
_OUTBOX_IN_STATE = sa.select(sa.func.count()).select_from(outbox).where(
    outbox.c.destination_id == sa.bindparam("d"), outbox.c.state == sa.bindparam("state"))
_DEAD = outbox.alias("dead")
# Pending pushes of a destination waiting behind a dead letter of their ticket (until an operator acts).
_HELD = (sa.select(sa.func.count()).select_from(outbox)
         .where(outbox.c.destination_id == sa.bindparam("d"), outbox.c.state == "pending",
                sa.exists().where(_DEAD.c.ordering_key == outbox.c.ordering_key, _DEAD.c.state == "dead",
                                  _DEAD.c.id < outbox.c.id)))


@dataclass(frozen=True)
class Backlog:
    inbox: dict[str, int]                 # pending | quarantined | done
    outbox: dict[str, dict[str, int]]     # destination → pending | dead | held


async def count(db: Database, destinations: list[str]) -> Backlog:
    async with db.read() as conn:
        inbox = {state: (await conn.execute(_RAW_IN_STATE, {"state": state})).scalar_one()
                 for state in ("pending", "quarantined")}
        issued = (await conn.execute(sa.select(sa.func.max(raw_events.c.id)))).scalar() or 0
        out = {d: {state: (await conn.execute(_OUTBOX_IN_STATE, {"d": d, "state": state})).scalar_one()
                   for state in ("pending", "dead")} for d in destinations}
        for d in destinations:
            out[d]["held"] = (await conn.execute(_HELD, {"d": d})).scalar_one()
    # Done: every id issued that is in neither of the other states (ids are never reused).
    inbox["done"] = max(0, issued - inbox["pending"] - inbox["quarantined"])
    return Backlog(inbox, out)
