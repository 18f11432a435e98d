"""A simulated WeChat: a push sender that signs and encrypts exactly as WeChat
does, and a mock of the server API (access tokens, after-sale detail).

:class:`WechatPusher` builds customer-service messages and 微信小店 after-sale
events, in JSON or XML, plain (``signature``) or safe mode (AES-256-CBC with
the EncodingAESKey, ``msg_signature``), and POSTs them the way WeChat does —
including the URL-check GET. :class:`WechatPlatform` answers
``/cgi-bin/token`` (tokens that expire, or can be made to) and
``/channels/ec/aftersale/getaftersaleorder``, and holds the shop's after-sale
orders, which move through ``EcAftersaleInfoStatus``.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from connectors import fakedata
from connectors.simserver import SimServer
from connectors.wechat.crypto import WxCrypto, signature

REASONS = ["NO_LONGER_WANT", "DAMAGED", "QUALITY_PROBLEM", "WRONG_ITEM", "NOT_AS_DESCRIBED"]
TEXTS = ["你好，我买的杯子碎了怎么办", "退款什么时候到账？", "我已经寄回了，单号 SF1402938481",
         "尺码不对可以换吗", "请问还在吗"]


def new_aes_key() -> str:
    """A fresh 43-character EncodingAESKey, as the WeChat console generates."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


def to_xml(msg: dict[str, Any]) -> str:
    def node(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return f"<{key}>{''.join(node(k, v) for k, v in value.items())}</{key}>"
        if isinstance(value, (int, float)):
            return f"<{key}>{value}</{key}>"
        return f"<{key}><![CDATA[{value}]]></{key}>"

    return "<xml>" + "".join(node(k, v) for k, v in msg.items()) + "</xml>"


@dataclass
class WechatPusher:
    """Sends pushes to a hub's ``/webhooks/{source_id}`` as WeChat would."""

    url: str
    token: str
    app_id: str
    encoding_aes_key: str | None = None
    original_id: str = "gh_97417a04a28d"
    fmt: str = "json"            # json | xml
    safe: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(13))

    def openid(self) -> str:
        return "o" + base64.urlsafe_b64encode(self.rng.randbytes(20)).decode()[:27]

    def text(self, openid: str, content: str | None = None) -> dict[str, Any]:
        return {"ToUserName": self.original_id, "FromUserName": openid, "CreateTime": int(time.time()),
                "MsgType": "text", "Content": content or self.rng.choice(TEXTS),
                "MsgId": self.rng.randint(10**16, 10**17)}

    def aftersale_event(self, order: dict[str, Any]) -> dict[str, Any]:
        return {"ToUserName": self.original_id, "FromUserName": order["openid"], "CreateTime": int(time.time()),
                "MsgType": "event", "Event": "channels_ec_aftersale_update",
                "finder_shop_aftersale_status_update": {"status": order["status"],
                                                        "after_sale_order_id": order["after_sale_order_id"],
                                                        "order_id": order["order_id"]}}

    def envelope(self, msg: dict[str, Any], *, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        """The query string and body WeChat would send for ``msg``."""
        ts, nonce = str(timestamp if timestamp is not None else int(time.time())), str(self.rng.randint(10**8, 10**9))
        inner = orjson.dumps(msg).decode() if self.fmt == "json" else to_xml(msg)
        query = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": str(msg.get("FromUserName", ""))}
        if not self.safe:
            return query, inner.encode()
        assert self.encoding_aes_key, "safe mode needs the EncodingAESKey"
        crypto = WxCrypto(self.token, self.encoding_aes_key, self.app_id)
        enc = crypto.encrypt(inner.encode())
        query |= {"encrypt_type": "aes", "msg_signature": crypto.msg_signature(ts, nonce, enc)}
        outer = {"ToUserName": self.original_id, "Encrypt": enc}
        body = orjson.dumps(outer) if self.fmt == "json" else to_xml(outer).encode()
        return query, body

    async def send(self, http: aiohttp.ClientSession, msg: dict[str, Any], **kw: Any) -> tuple[int, str]:
        query, body = self.envelope(msg, **kw)
        async with http.post(self.url, params=query, data=body,
                             headers={"Content-Type": "application/json" if self.fmt == "json" else "text/xml"}) as resp:
            return resp.status, await resp.text()

    async def check_url(self, http: aiohttp.ClientSession) -> tuple[int, str]:
        ts, nonce, echostr = str(int(time.time())), str(self.rng.randint(10**8, 10**9)), str(self.rng.getrandbits(62))
        async with http.get(self.url, params={"signature": signature(self.token, ts, nonce), "timestamp": ts,
                                              "nonce": nonce, "echostr": echostr}) as resp:
            return resp.status, await resp.text()


@dataclass
class WechatPlatform(SimServer):
    """The WeChat server API: tokens and 微信小店 after-sale orders."""

    app_id: str = "wxba5fad812f8e6fb9"
    app_secret: str = "sandbox-wechat-secret"
    token_ttl: int = 7200
    seed: int = 21

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.orders: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}     # token → expiry (unix)
        self.calls: Counter[str] = Counter()
        self._next = 3_700_000_000_000_000

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def expire_tokens(self) -> None:
        """Every token stops working (another process fetched a new one)."""
        self.tokens.clear()

    def create_order(self, openid: str, unionid: str | None = None, kind: str = "RETURN") -> dict[str, Any]:
        self._next += self.rng.randint(1, 999)
        sku, title, price = self.rng.choice(fakedata.PRODUCTS)
        now = int(time.time())
        order = {"after_sale_order_id": str(self._next), "order_id": str(self._next // 1000 + 42),
                 "status": "MERCHANT_PROCESSING", "openid": openid, "unionid": unionid, "type": kind,
                 "reason": self.rng.choice(REASONS), "reason_text": "", "create_time": now, "update_time": now,
                 "product_info": {"product_id": sku, "sku_id": sku, "count": 1, "title": title},
                 "refund_info": {"amount": int(round(float(price) * 100))},
                 "details": {"desc": self.rng.choice(TEXTS), "tel_number": fakedata.phone(self.rng)}}
        self.orders[order["after_sale_order_id"]] = order
        return order

    def move(self, order: dict[str, Any], status: str) -> dict[str, Any]:
        order["status"] = status
        order["update_time"] = int(time.time())
        return order

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/channels/ec/aftersale/getaftersaleorder", self._aftersale)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        self.calls["token"] += 1
        q = request.query
        if q.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if q.get("appid") != self.app_id or q.get("secret") != self.app_secret:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid or secret"})
        token = secrets.token_urlsafe(48)
        self.tokens[token] = time.time() + self.token_ttl
        return web.json_response({"access_token": token, "expires_in": self.token_ttl})

    async def _aftersale(self, request: web.Request) -> web.Response:
        self.calls["getaftersaleorder"] += 1
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"})
        if self.tokens[token] < time.time():
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        order = self.orders.get(str(body.get("after_sale_order_id", "")))
        if order is None:
            return web.json_response({"errcode": 10020001, "errmsg": "aftersale order not exist"})
        return web.json_response({"errcode": 0, "errmsg": "ok", "after_sale_order": order})



