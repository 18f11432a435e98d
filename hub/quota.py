"""A token bucket: the platform's call quota, honoured before every call.

Taobao and JD meter each app's calls per second and per day; going over gets
a call-limit error and sometimes a ban of a minute or more. The bucket makes
the hub wait its turn instead. ``hold()`` lets the platform's own throttling
answer (with its ban time) push every caller back at once.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._held_until = 0.0
        self._lock = asyncio.Lock()  # callers wait in arrival order
        self.calls = 0  # calls let through so far: the quota use the admin sees

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until one call is allowed, then take it."""
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._held_until:
                    await asyncio.sleep(self._held_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1:
                    self._tokens -= 1
                    self.calls += 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def hold(self, seconds: float) -> None:
        """The platform said stop: no call for ``seconds``, and start again with an empty bucket."""
        now = time.monotonic()
        self._held_until = max(self._held_until, now + seconds)
        self._tokens = 0.0
        self._updated = self._held_until
