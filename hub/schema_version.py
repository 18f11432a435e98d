"""Is the database's schema at the newest migration? Told without Alembic.

Every hub process asks at start (``storage.auto_migrate``). Importing Alembic
to find out costs ~9 MB of memory a process for its lifetime, and ``hub run``
has already migrated before it starts its processes; so the newest revision
is read from the migration files' own ``revision``/``down_revision`` lines
and compared with ``alembic_version``. Only a database behind the code (an
upgrade of the hub followed by a reload) brings Alembic in to migrate.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import sqlalchemy as sa

from hub.storage import Database

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_LINE = re.compile(r"^(revision|down_revision)\s*=\s*['\"]?([\w-]+|None)['\"]?\s*$", re.MULTILINE)


@functools.cache
def head() -> str | None:
    """The one revision no other revision follows; None if the files say otherwise
    (several heads, or lines this parser does not read): then ask Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        found = dict(_LINE.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"] != "None":
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def is_current(db: Database) -> bool:
    """True when the database records the newest revision; False when it is
    behind, new, or this cannot tell."""
    newest = head()
    if newest is None:
        return False
    try:
        async with db.read() as conn:
            found = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
    except sa.exc.DBAPIError:  # no such table: a new database
        return False
    return found == [newest]
