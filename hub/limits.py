"""How much intake may hold in memory at once.

Every webhook request takes its share of one byte budget before its body is
read (:func:`request_cost` of the announced length, or of the whole
``max_body_bytes`` when it does not say or is compressed) and gives it back
when it has been answered. While the
database is slow or locked, requests wait for their commit holding their
bodies; once the budget is spent the next one is answered 503 with
Retry-After at once, unread, instead of the process growing until the kernel
kills it. The platforms resend (that is what 503 means to them), and nothing
is lost: a 503 acknowledges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a request costs beyond its body while it waits: the handler task, its
# parsed headers, the future.
REQUEST_OVERHEAD = 8192


def request_cost(body_bytes: int) -> int:
    """Memory a request holds until it is answered, counted as three times its
    body: the body and its parsed document while it is checked, then the sealed
    copy (base64: 4/3 of it) that waits for the commit — and what the allocator
    keeps around them (measured: RSS grows ~3.8x the body per request waiting)."""
    return REQUEST_OVERHEAD + 3 * body_bytes


@dataclass
class ByteBudget:
    limit: int
    in_use: int = 0

    def take(self, n: int) -> bool:
        if self.in_use + n > self.limit and self.in_use > 0:
            return False
        # One request larger than the whole budget is still let through when
        # nothing else is held: max_body_bytes, not the budget, bounds a body.
        self.in_use += n
        return True

    def give_back(self, n: int) -> None:
        self.in_use = max(0, self.in_use - n)
