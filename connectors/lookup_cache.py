"""Remember platform lookups (a refund's trade, a service's order) so a poll that
sees the same order again does not spend another call of the quota on it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from hub.errors import SourceRejected

log = structlog.get_logger("connectors.lookup")


class LookupCache:
    def __init__(self, fetch: Callable[[str], Awaitable[dict[str, Any] | None]], *,
                 what: str, size: int = 10_000):
        self.fetch = fetch
        self.what = what
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def get(self, key: Any) -> dict[str, Any] | None:
        """The record, or None when the platform will not show it (it must not
        hold the event back: the hub then links by id only)."""
        if key is None:
            return None
        k = str(key)
        if k in self._items:
            self._items.move_to_end(k)
            return self._items[k]
        try:
            found = await self.fetch(k)
        except SourceRejected as err:
            log.warning(f"{self.what} not readable; linked by id only", key=k, error=str(err))
            return None
        if found is not None:
            self._items[k] = found
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return found
