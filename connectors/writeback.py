"""What the platform write-back destinations share: which pushes concern them,
and how a platform API failure becomes a delivery outcome.

A write-back carries out the hub's decision on the platform; it must be
idempotent against the platform's current state (re-read first, call only
when the platform is not already there), so retries and the platform's own
moves never cause a second effect.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson

from hub.errors import Permanent, Retryable, SourceError, SourceRejected, SourceThrottled
from hub.interfaces import Push, Receipt


def read_decision(push: Push, source: str | None, actions: set[str]) -> tuple[dict[str, Any], Receipt | None]:
    """The push's decision, or a no-op receipt when it is not this destination's to carry out."""
    decision = orjson.loads(push.payload)
    if source and decision.get("source_id") != source:
        return decision, Receipt(204, f"ticket of source {decision.get('source_id')!r}: not ours")
    if str(decision.get("to_status")) not in actions:
        return decision, Receipt(204, f"nothing to do on the platform for {decision.get('to_status')!r}")
    return decision, None


async def as_delivery(call: Awaitable[Receipt]) -> Receipt:
    """Platform errors → delivery outcomes: throttling and outages are retried
    (after the platform's ban), refused credentials too (they get renewed;
    the dead-letter queue catches what never recovers), a refusal of the
    request itself is permanent."""
    try:
        return await call
    except SourceThrottled as err:
        raise Retryable(str(err), retry_after=err.retry_after) from None
    except SourceRejected as err:
        raise Permanent(str(err), body=str(err)) from None
    except SourceError as err:
        raise Retryable(str(err)) from None
