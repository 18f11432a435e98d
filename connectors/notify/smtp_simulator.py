"""A real local SMTP server (aiosmtpd) that keeps what it receives: each
message once by its ``Message-ID`` (the push's idempotency key), parsed, and
can refuse recipients (``refuse``: addresses answered 550), defer
everything for a while (``defer``: answered 451) or defer at random
(``fail_rate``).
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpSimulator:
    refuse: set[str] = field(default_factory=set)
    defer: int = 0                                              # answer the next this many with 451
    fail_rate: float = 0.0                                      # answer this share with 451
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    deferred: int = 0                                           # 451s answered
    received: list[EmailMessage] = field(default_factory=list)  # each message once, in order
    copies: dict[str, int] = field(default_factory=dict)        # Message-ID → times it arrived
    port: int = 0
    _controller: Controller | None = None

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.defer > 0 or (self.fail_rate and self.rng.random() < self.fail_rate):
            self.defer = max(0, self.defer - 1)
            self.deferred += 1
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        m = message_from_bytes(raw if isinstance(raw, bytes) else raw.encode(), policy=policy.default)
        assert isinstance(m, EmailMessage)
        mid = str(m.get("Message-ID", ""))
        self.copies[mid] = self.copies.get(mid, 0) + 1
        if self.copies[mid] == 1:
            self.received.append(m)
        return "250 Message accepted"

    def start(self) -> None:
        self.port = _free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
