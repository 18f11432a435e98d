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
from pydantic import BaseModel, model_validator

from hub.config import QuotaConfig
from hub.errors import Permanent, Retryable, SourceError, SourceRejected, SourceThrottled
from hub.interfaces import Push, Receipt

CALLS_PER_PUSH = 2  # a write-back re-reads the platform's record, then makes at most one call


class QuotaPaced(BaseModel):
    """A write-back's platform quota, and pushes paced to it.

    Without a ``rate`` of its own, the destination is paced at the quota's
    rate over :data:`CALLS_PER_PUSH`: delivery then waits for a push's turn
    *before* its attempt starts. Otherwise a backlog (a Double-11 morning)
    would queue on the API client's bucket inside each attempt's timeout and
    read as the platform not answering — retries, and the circuit opening on
    a platform that is fine.
    """

    quota: QuotaConfig = QuotaConfig()

    @model_validator(mode="before")
    @classmethod
    def _pace_by_quota(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rate") is None:
            quota = QuotaConfig.model_validate(data.get("quota") or {})
            data = {**data, "rate": quota.rate / CALLS_PER_PUSH}
        return data


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
