"""A local 聚水潭 open platform: ``POST /open/aftersale/upload`` as the ERP
takes it — form-encoded, the md5 ``sign`` checked, ``biz`` a JSON array of
after-sales records, each upserted by ``outer_as_id`` and answered one by
one (``issuccess``). It records every accepted version of every record in
arrival order, so a test can say each push arrived once and in order, and
it can be told to have a bad day (:class:`connectors.faults.Faults`).
``/hook`` is the generic variant: the same record, Standard Webhooks signed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from connectors.erp.signing import jushuitan_verify
from connectors.faults import Faults
from connectors.simserver import serve
from hub import standard_webhooks
from hub.errors import VerificationError

TYPES = {"普通退货", "拒收退货", "仅退款", "换货", "补发", "其他"}
SHOP_STATUSES = {"WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS",
                 "SELLER_REFUSE_BUYER", "CLOSED", "SUCCESS"}


@dataclass
class ErpSimulator:
    app_key: str = "erp-app-key"
    app_secret: str = "erp-app-secret"
    access_token: str = "erp-access-token"
    webhook_secret: str = field(default_factory=standard_webhooks.new_secret)
    faults: Faults = field(default_factory=Faults)
    # outer_as_id → the record as it stands; every accepted upload in order; refusals.
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    webhook_seen: dict[str, int] = field(default_factory=dict)
    # After-sales numbers the ERP refuses to change (closed on its side), with its words.
    locked: set[str] = field(default_factory=set)
    on_upload: Callable[[dict[str, Any]], None] | None = None  # the demo prints each upsert
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/open/aftersale/upload"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/open/aftersale/upload", self._upload)
        app.router.add_post("/hook", self._hook)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def history(self, outer_as_id: str) -> list[str]:
        """The shop_status of each accepted upload of one record, in arrival order."""
        return [u["shop_status"] for u in self.uploads if u["outer_as_id"] == outer_as_id]

    @staticmethod
    def _answer(code: int, msg: str, datas: list[dict[str, Any]] | None = None) -> web.Response:
        return web.json_response({"code": code, "msg": msg, "data": {"datas": datas or []}})

    async def _upload(self, request: web.Request) -> web.Response:
        bad_day = await self.faults.before()
        if bad_day is not None:
            return bad_day
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("app_key") != self.app_key or form.get("access_token") != self.access_token:
            return self._answer(10, "app_key 或 access_token 无效")
        if not jushuitan_verify(self.app_secret, form):
            return self._answer(11, "签名错误")
        if not form.get("timestamp", "").isdigit() or abs(int(form["timestamp"]) - time.time()) > 600:
            return self._answer(12, "timestamp 已过期")
        try:
            biz = orjson.loads(form.get("biz", ""))
        except orjson.JSONDecodeError:
            return self._answer(40, "biz 不是 JSON")
        if not isinstance(biz, list) or not biz:
            return self._answer(40, "biz 应为售后单数组")
        datas = [self._upsert(r) for r in biz]
        return self._answer(0, "执行成功", datas)

    def _upsert(self, r: Any) -> dict[str, Any]:
        problem = self._problem(r)
        outer = str(r.get("outer_as_id")) if isinstance(r, dict) else "?"
        if problem is None and outer in self.locked:
            problem = "售后单已确认，不可修改"
        if problem:
            self.refused.append(outer)
            return {"outer_as_id": outer, "issuccess": False, "msg": problem}
        before = self.records.get(outer)
        if before != r:  # the same record again (a retry after a lost answer) changes nothing
            self.records[outer] = r
            self.uploads.append(r)
            if self.on_upload is not None:
                self.on_upload(r)
        return {"outer_as_id": outer, "issuccess": True, "as_id": 900000 + len(self.records), "msg": ""}

    @staticmethod
    def _problem(r: Any) -> str | None:
        if not isinstance(r, dict):
            return "售后单应为对象"
        if not r.get("outer_as_id"):
            return "outer_as_id 必填"
        if not isinstance(r.get("shop_id"), int):
            return "shop_id 必填"
        if r.get("type") not in TYPES:
            return f"type 无效: {r.get('type')}"
        if r.get("shop_status") not in SHOP_STATUSES:
            return f"shop_status 无效: {r.get('shop_status')}"
        items = r.get("items")
        if not isinstance(items, list) or any(not isinstance(i, dict) or not isinstance(i.get("qty"), int)
                                              or i["qty"] <= 0 for i in items):
            return "items 无效"
        return None

    async def _hook(self, request: web.Request) -> web.Response:
        bad_day = await self.faults.before()
        if bad_day is not None:
            return bad_day
        body = await request.read()
        try:
            standard_webhooks.verify([standard_webhooks.decode_secret(self.webhook_secret)],
                                     {k.lower(): v for k, v in request.headers.items()}, body)
        except VerificationError as err:
            return web.json_response({"error": str(err)}, status=401)
        msg_id = request.headers.get("webhook-id", "")
        self.webhook_seen[msg_id] = self.webhook_seen.get(msg_id, 0) + 1
        if self.webhook_seen[msg_id] == 1:
            self._upsert({**orjson.loads(body), "shop_id": 0})
        return web.json_response({"ok": True})
