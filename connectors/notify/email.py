"""E-mail notices over SMTP: the standard library's client, run in a worker
thread (one connection per notice; notices are few next to pushes).

The ``Message-ID`` is the push's idempotency key, so a mail server or
archive that dedupes on it sees a retried notice once. A recipient the
server refuses (5xx) is permanent; anything temporary (4xx, a dropped
connection, a timeout) is retried.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from hub.errors import Permanent, Retryable


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    timeout: float = 10.0


def message(smtp: Smtp, to: str, subject: str, body: str, message_id: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = smtp.sender, to, subject
    m["Date"] = formatdate(usegmt=True)
    m["Message-ID"] = f"<{message_id}@aftersales-hub>"
    m.set_content(body)  # UTF-8, so the Chinese text arrives as written
    return m


def _send(smtp: Smtp, m: EmailMessage) -> None:
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as conn:
            if smtp.starttls:
                conn.starttls(context=ssl.create_default_context())
            if smtp.username:
                conn.login(smtp.username, smtp.password or "")
            conn.send_message(m)
    except smtplib.SMTPRecipientsRefused as err:
        codes = {code for code, _ in err.recipients.values()}
        if all(c >= 500 for c in codes):
            raise Permanent(f"mail server refused the recipient ({', '.join(map(str, sorted(codes)))})") from None
        raise Retryable("mail server deferred the recipient") from None
    except smtplib.SMTPAuthenticationError as err:
        raise Retryable(f"mail server refused the login ({err.smtp_code})") from None
    except smtplib.SMTPResponseException as err:
        if err.smtp_code >= 500:
            raise Permanent(f"mail server refused the message ({err.smtp_code})") from None
        raise Retryable(f"mail server deferred the message ({err.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as err:
        raise Retryable(f"mail server unreachable: {type(err).__name__}") from None


async def send(smtp: Smtp, m: EmailMessage) -> None:
    await asyncio.to_thread(_send, smtp, m)
