"""A circuit breaker for a platform API: stop calling what keeps failing.

Closed: calls go through; ``failures`` in a row open it. Open: no calls
until the cooldown (doubling on each failed trial, up to ``max_cooldown``)
has passed; then half-open: one trial call, whose success closes it again.
Credentials refused open it at once (``trip``): hammering a platform with a
dead session only gets the app banned.
"""

from __future__ import annotations

import time
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown: float = 60.0, max_cooldown: float = 900.0):
        self.threshold = failures
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.failures = 0
        self._state = CircuitState.CLOSED
        self._cooldown = cooldown
        self._opened_at = 0.0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self.remaining() == 0:
            return CircuitState.HALF_OPEN
        return self._state

    def remaining(self) -> float:
        """Seconds until a trial call is allowed (0 when calls may go now)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - time.monotonic())

    def trial_from(self) -> float | None:
        """While open (or half-open): the monotonic time from which an attempt is a
        trial; None when closed. An attempt started before it was already in the air
        when the circuit opened: its failure is no trial's."""
        if self._state is not CircuitState.OPEN:
            return None
        return self._opened_at + self._cooldown

    def allows(self) -> bool:
        return self.remaining() == 0

    def success(self) -> None:
        self.failures = 0
        self._state = CircuitState.CLOSED
        self._cooldown = self.base_cooldown

    def failure(self) -> None:
        self.failures += 1
        if self._state is CircuitState.OPEN:  # the half-open trial failed
            self._reopen(longer=True)
        elif self.failures >= self.threshold:
            self._reopen(longer=False)

    def trip(self) -> None:
        """Open now, whatever the count (credentials refused)."""
        self.failures += 1
        self._reopen(longer=self._state is CircuitState.OPEN)

    def _reopen(self, *, longer: bool) -> None:
        if longer:
            self._cooldown = min(self.max_cooldown, self._cooldown * 2)
        self._state = CircuitState.OPEN
        self._opened_at = time.monotonic()
