"""One exception tree for the whole hub; callers branch on classes, never on text.

::

    HubError
    ├── ConfigError                 bad config file: carries every problem with its key path
    ├── MappingError                bad mapping file: file, line and key in the message
    ├── IngressError                an inbound HTTP request we refuse (server maps to 4xx)
    │   ├── VerificationError       401: missing/wrong signature, stale timestamp, bad credentials
    │   ├── PayloadError            400: broken JSON/XML, missing required envelope fields
    │   │   └── PayloadTooLarge     413: body over server.max_body_bytes
    │   └── UnknownSource           404: no such source id (or kind has no webhook ingress)
    ├── StorageUnavailable          503: the database did not take the write; nothing acked
    ├── Quarantine                  an event that cannot be normalized; stored with its reason
    └── DeliveryError               one push attempt failed
        ├── Retryable               5xx, 408, 409, 429, network errors: back off and try again
        └── Permanent               other 4xx: dead-letter at once with the response recorded
"""

from __future__ import annotations

from dataclasses import dataclass


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a file, located by key path and (when known) line."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.file is not None:
            loc = f"{self.file}:{self.line}" if self.line else self.file
            return f"{loc}: {where}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(HubError):
    """The config file is unusable; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MappingError(HubError):
    """A mapping file is invalid; ``problems`` locate each error by file, line and key."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IngressError(HubError):
    status = 400
    code = "bad_request"


class VerificationError(IngressError):
    status = 401
    code = "verification_failed"


class PayloadError(IngressError):
    status = 400
    code = "bad_payload"


class PayloadTooLarge(PayloadError):
    status = 413
    code = "payload_too_large"


class UnknownSource(IngressError):
    status = 404
    code = "unknown_source"


class StorageUnavailable(HubError):
    """The database refused or could not take a write; callers answer 503."""


class Quarantine(HubError):
    """An event cannot be normalized; the raw event is kept with this reason."""


class DeliveryError(HubError):
    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class Retryable(DeliveryError):
    """Try again later (server error, throttling, network trouble)."""


class Permanent(DeliveryError):
    """Retrying cannot help (the receiver rejected the request itself)."""


class SourceError(HubError):
    """A platform API call failed; what the poller does next depends on the subclass.

    ``message`` is what the operator sees as the source's last error, so it
    carries the platform's own code and text.
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SourceThrottled(SourceError):
    """Over the platform's call quota: wait (``retry_after``), then carry on."""


class SourceAuthError(SourceError):
    """Credentials refused (expired session, bad app key, bad signature):
    retrying at once cannot help, so the circuit opens and the source shows
    unhealthy until a trial call succeeds."""


class SourceTransient(SourceError):
    """A server-side or network failure that a later attempt may not meet."""


class SourceRejected(SourceError):
    """The platform refused this particular request (a business error)."""
