"""What the marketplace API clients (Taobao TOP, JD JOS) share: a form POST to
one gateway under the app's call quota, server-side hiccups retried with
backoff, and the answer's envelope unwrapped or turned into a source error.

Each platform's client supplies its signing (:meth:`form`) and its envelopes
(:meth:`unwrap`); throttling and refused credentials are never retried here —
the poll runner decides whether to wait or to stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from hub.errors import SourceTransient
from hub.quota import TokenBucket


class GatewayClient:
    platform = "API"

    def __init__(self, url: str, *, quota: TokenBucket | None = None, timeout: float = 15.0,
                 attempts: int = 3):
        self.url = url
        self.quota = quota
        self.attempts = attempts
        self.http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    def form(self, method: str, params: Mapping[str, Any]) -> dict[str, str]:
        """The signed form for one call."""
        raise NotImplementedError

    def unwrap(self, method: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The answer's payload, or raise the matching SourceError."""
        raise NotImplementedError

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(SourceTransient), stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.2, max=2), reraise=True):
            with attempt:
                return await self._call_once(method, params)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.quota is not None:
            await self.quota.acquire()
        doc = await fetch_json(self.http, "POST", self.url, f"{self.platform} {method}",
                               data=self.form(method, params))
        if not isinstance(doc, dict):
            raise SourceTransient(f"{self.platform} {method}: unexpected body")
        return self.unwrap(method, doc)


# A page of 100 refunds with their details is well under 1 MB; an answer past
# this is not one the hub will hold in memory.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


async def fetch_json(http: httpx.AsyncClient, method: str, url: str, what: str, *,
                     limit: int = MAX_ANSWER_BYTES, **kwargs: Any) -> Any:
    """One platform HTTP call whose answer must be JSON. Transport trouble, a
    5xx, a body that is not JSON and one over ``limit`` bytes (not read past
    it) are SourceTransient (worth another try); ``what`` names the call."""
    try:
        async with http.stream(method, url, **kwargs) as resp:
            if resp.status_code >= 500:
                raise SourceTransient(f"{what}: HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise SourceTransient(f"{what}: answer over {limit} bytes")
    except httpx.HTTPError as err:
        raise SourceTransient(f"{what}: {type(err).__name__}: {err}") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SourceTransient(f"{what}: HTTP {resp.status_code}, body is not JSON") from None
