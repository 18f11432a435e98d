"""What every platform API call shares: an answer is JSON or a transient
error, and one larger than the cap is refused without being held whole."""

from __future__ import annotations

import httpx
import pytest
import respx

from connectors.platform_api import fetch_json
from hub.errors import SourceTransient

URL = "https://gw.api.taobao.com/router/rest"


@respx.mock
async def test_an_answer_over_the_cap_is_transient() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, content=b"[" + b"1," * 600_000 + b"1]"))
    async with httpx.AsyncClient() as http:
        with pytest.raises(SourceTransient, match="answer over 1000000 bytes"):
            await fetch_json(http, "POST", URL, "TOP taobao.refund.get", limit=1_000_000)
        assert len(await fetch_json(http, "POST", URL, "TOP taobao.refund.get")) == 600_001


@respx.mock
async def test_server_trouble_and_non_json_are_transient() -> None:
    route = respx.post(URL)
    route.side_effect = [httpx.Response(502), httpx.Response(200, content=b"<html>"),
                         httpx.ConnectError("refused")]
    async with httpx.AsyncClient() as http:
        for expected in ("HTTP 502", "body is not JSON", "ConnectError"):
            with pytest.raises(SourceTransient, match=expected):
                await fetch_json(http, "POST", URL, "TOP x")
