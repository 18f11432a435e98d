"""When to try a failed push again, and when to give up.

The schedule is tenacity's exponential backoff with jitter; the attempts are
persisted in the outbox (a retry may happen after a restart), so this object
only computes the next delay from the attempt number and the age of the
first attempt, honouring a receiver's Retry-After.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import tenacity

from hub.config import RetryConfig


@dataclass(frozen=True)
class RetryDecision:
    give_up: bool
    delay: float = 0.0


class RetryPolicy:
    def __init__(self, cfg: RetryConfig):
        self.cfg = cfg
        self._wait = tenacity.wait_exponential(
            multiplier=cfg.initial, max=cfg.max_delay, exp_base=cfg.multiplier,
        ) + tenacity.wait_random(0, cfg.jitter)
        self._stop = tenacity.stop_after_attempt(cfg.max_attempts) | tenacity.stop_after_delay(
            cfg.give_up_after)

    def decide(self, attempts: int, since_first: float, retry_after: float | None = None) -> RetryDecision:
        """``attempts`` made so far (≥ 1), ``since_first`` seconds since the first one."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempts
        state.start_time = 0.0
        state.outcome_timestamp = since_first
        if self._stop(state):
            return RetryDecision(give_up=True)
        delay = float(self._wait(state))
        if retry_after is not None:
            delay = max(delay, retry_after)  # the receiver knows best; the deadline still applies
        if since_first + delay > self.cfg.give_up_after:
            # One last try at the deadline rather than silently past it.
            delay = max(0.0, self.cfg.give_up_after - since_first)
        return RetryDecision(give_up=False, delay=delay)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date → seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
