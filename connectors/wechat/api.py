"""The WeChat server API as the hub uses it: an access token, cached and
refreshed, and JSON POSTs that carry it.

``GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`` gives
``{"access_token", "expires_in": 7200}``. Every app shares one token, and
fetching a new one invalidates the old after a short grace, so it is cached
until shortly before it expires and fetched by one caller at a time. A call
answered ``errcode`` 40001 / 40014 / 42001 (token invalid or expired — another
process took a new one) refreshes once and retries.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from connectors.platform_api import fetch_json
from hub.errors import SourceAuthError, SourceRejected, SourceThrottled, SourceTransient

TOKEN_ERRORS = {40001, 40014, 42001}
THROTTLE_ERRORS = {45009, 45011}   # api daily limit / frequency limit
EARLY = 300.0                      # refresh this long before expires_in runs out


class WechatApi:
    def __init__(self, base_url: str, app_id: str, app_secret: str, *, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self.app_secret = app_secret
        self.http = httpx.AsyncClient(timeout=timeout)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def token(self, *, stale: str | None = None) -> str:
        async with self._lock:
            # Another caller may have refreshed while we waited for the lock.
            if self._token and self._token != stale and time.monotonic() < self._expires:
                return self._token
            doc = await self._json("GET", "/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret})
            token = doc.get("access_token")
            if not isinstance(token, str) or not token:
                raise SourceTransient("WeChat /cgi-bin/token: no access_token in the answer")
            self._token = token
            self._expires = time.monotonic() + max(60.0, float(doc.get("expires_in") or 7200) - EARLY)
            return token

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = await self.token()
        try:
            return await self._json("POST", path, params={"access_token": token}, json=body)
        except _TokenExpired:
            token = await self.token(stale=token)
            return await self._json("POST", path, params={"access_token": token}, json=body)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        doc = await fetch_json(self.http, method, self.base_url + path, f"WeChat {path}", **kwargs)
        code = int(doc.get("errcode") or 0) if isinstance(doc, dict) else -1
        if code == 0:
            return doc
        text = f"WeChat {path}: errcode {code} {doc.get('errmsg', '')}".strip()
        if code in TOKEN_ERRORS and path != "/cgi-bin/token":
            raise _TokenExpired(text)
        if code in THROTTLE_ERRORS:
            raise SourceThrottled(text, retry_after=60.0)
        if code in (40013, 40125, 40164, 41004):  # bad appid / secret / IP not whitelisted
            raise SourceAuthError(text)
        if code == -1:
            raise SourceTransient(text)
        raise SourceRejected(text)


class _TokenExpired(SourceAuthError):
    """The token was refused: fetch a new one and try once more."""
