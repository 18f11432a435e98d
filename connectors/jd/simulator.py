"""A simulated JD Open Platform (JOS) gateway with a shop's after-sales services.

It checks every call as ``/routerjson`` does — app key, ``v=2.0``, the
timestamp within 6 minutes (with or without milliseconds and zone), the md5
signature over secret + sorted parameters + secret, the access token — and
answers failures with JOS's ``error_response`` (string ``code``, ``zh_desc``,
``en_desc``). Over its call quota it answers the throttling code. Services
move through the status table ``mappings/jd.yaml`` maps (its codes are this
simulator's, see the connector's docstring), bumping ``updateTime``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import orjson
from aiohttp import web

from connectors import fakedata
from connectors.jd.client import response_key, sign
from connectors.simserver import SimServer
from connectors.window_poll import PLATFORM_TIME, platform_time
from hub.casts import SHANGHAI

STATUS_NAMES = {10001: "待审核", 10002: "待客户反馈", 10003: "审核关闭", 10004: "待客户发货",
                10005: "待收货", 10006: "待处理", 10007: "待退款", 10009: "处理完成", 10010: "已取消"}
EXPECT_NAMES = {10: "退货", 20: "换货", 30: "维修", 40: "仅退款"}
TERMINAL = (10003, 10009, 10010)
QUESTIONS = ["商品质量问题", "收到商品损坏", "发错货", "少件", "与描述不符", "不想要了"]


class JosError(Exception):
    def __init__(self, code: str, zh: str, en: str):
        super().__init__(zh)
        self.body = {"code": code, "zh_desc": zh, "en_desc": en}


def _parse_ts(text: str) -> datetime:
    base = text[:19]
    return datetime.strptime(base, PLATFORM_TIME).replace(tzinfo=SHANGHAI)


@dataclass
class JdSimulator(SimServer):
    app_key: str = "jd-sandbox-app"
    app_secret: str = "jd-sandbox-secret"
    access_token: str = "jd-sandbox-token-2c9f"
    seed: int = 5
    token_valid: bool = True
    gateway_path: ClassVar[str] = "/routerjson"
    status_field: ClassVar[str] = "serviceStatus"
    terminal: ClassVar[tuple[Any, ...]] = TERMINAL

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.services: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self._next_service = 1_480_000_000
        self._next_order = 290_000_000_000
        self.calls: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.list_log: list[tuple[str, str, int]] = []

    # ------------------------------------------------------------ the store

    def _new_service(self, at: str, status: int = 10001) -> dict[str, Any]:
        r = self.rng
        self._next_order += r.randint(1, 999)
        sku, title, price = r.choice(fakedata.PRODUCTS)
        num = r.randint(1, 2)
        buyer = fakedata.name(r)
        pin = f"jd_{r.getrandbits(40):010x}"
        phone = fakedata.phone(r)
        address = fakedata.address(r)
        order = {"orderId": self._next_order, "orderTotalPrice": f"{float(price) * num:.2f}",
                 "orderPayment": f"{float(price) * num:.2f}", "orderState": "FINISHED_L",
                 "orderStartTime": at, "pin": pin,
                 "consigneeInfo": {"fullname": buyer, "mobile": phone, "fullAddress": address},
                 "itemInfoList": [{"skuId": str(100000 + r.randint(1, 99999)), "outerSkuId": sku,
                                   "skuName": title, "itemTotal": str(num), "jdPrice": price}]}
        self.orders[order["orderId"]] = order
        self._next_service += r.randint(1, 99)
        expect = r.choice([10, 10, 20, 30, 40])
        service = {
            "serviceId": self._next_service, "orderId": order["orderId"], "skuId": int(order["itemInfoList"][0]["skuId"]),
            "wareName": title, "wareNum": num, "outerSkuId": sku,
            "serviceStatus": status, "serviceStatusName": STATUS_NAMES[status],
            "customerExpect": expect, "customerExpectName": EXPECT_NAMES[expect],
            "customerPin": pin, "customerName": buyer, "customerTel": phone[:3] + "****" + phone[-4:],
            "applyTime": at, "updateTime": at,
            # detail-only fields
            "questionTypeName": r.choice(QUESTIONS), "questionDesc": r.choice(["", "外壳有划痕", "开机没反应"]),
            "customerMobilePhone": phone, "pickwareAddress": address,
            "refundAmount": f"{float(price) * num:.2f}", "approveNotes": "",
        }
        self.services[service["serviceId"]] = service
        return service

    def populate(self, count: int, since: datetime, until: datetime) -> None:
        span = (until - since).total_seconds()
        for i in range(count):
            service = self._new_service(platform_time(since + timedelta(seconds=span * i / max(1, count))))
            for _ in range(self.rng.choice([0, 1, 1, 2, 3])):
                nxt = self.next_status(service)
                if nxt is None:
                    break
                service["serviceStatus"], service["serviceStatusName"] = nxt, STATUS_NAMES[nxt]

    def create_service(self) -> dict[str, Any]:
        return self._new_service(platform_time(self.clock()))

    def records(self) -> dict[Any, dict[str, Any]]:
        return self.services

    def next_status(self, s: dict[str, Any]) -> int | None:
        r, st = self.rng.random(), s["serviceStatus"]
        if st == 10001:
            return 10004 if r < 0.6 else (10002 if r < 0.75 else (10003 if r < 0.9 else 10010))
        if st == 10002:
            return 10001 if r < 0.7 else 10010
        if st == 10004:
            return 10005 if r < 0.9 else 10010
        if st == 10005:
            return 10006
        if st == 10006:
            return 10007 if s["customerExpect"] in (10, 40) else 10009
        if st == 10007:
            return 10009
        return None

    def move(self, service: dict[str, Any], status: int, notes: str = "") -> None:
        service["serviceStatus"], service["serviceStatusName"] = status, STATUS_NAMES[status]
        service["updateTime"] = platform_time(self.clock())
        if notes:
            service["approveNotes"] = notes

    # ------------------------------------------------------------ the gateway

    async def handle(self, request: web.Request) -> web.Response:
        params = await self.gateway_params(request)
        method = params.get("method", "")
        self.calls[method] += 1
        try:
            self._check(params)
            try:
                app_params = orjson.loads(params.get("360buy_param_json") or "{}")
            except orjson.JSONDecodeError:
                raise JosError("3", "360buy_param_json 不是合法的JSON", "Invalid 360buy_param_json") from None
            result = self._dispatch(method, app_params)
            body: dict[str, Any] = {response_key(method): {"code": "0"} | result}
        except JosError as err:
            self.refusals[err.body["code"]] += 1
            body = {"error_response": err.body}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _check(self, p: dict[str, str]) -> None:
        if not p.get("app_key") or p["app_key"] != self.app_key:
            raise JosError("11", "无效app_key", "Invalid app_key")
        if not p.get("method"):
            raise JosError("5", "缺少方法名参数", "Missing method")
        if p.get("v") != "2.0":
            raise JosError("6", "版本号错误", "Invalid version")
        try:
            ts = _parse_ts(p.get("timestamp", ""))
        except ValueError:
            raise JosError("21", "时间戳格式错误", "Invalid timestamp") from None
        if abs((ts - self.clock()).total_seconds()) > 360:
            raise JosError("21", "时间戳超出允许范围", "Timestamp out of range")
        if not p.get("sign") or sign(p, self.app_secret) != p["sign"]:
            raise JosError("12", "无效签名", "Invalid signature")
        if self.quota.take() is not None:
            raise JosError("67", "调用次数超限", "Call limit exceeded")
        if p.get("access_token") != self.access_token or not self.token_valid:
            raise JosError("19", "无效access_token", "Invalid access_token")

    def _dispatch(self, method: str, a: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "jingdong.asc.query.list": self._list,
            "jingdong.asc.query.view": self._view,
            "jingdong.pop.order.get": self._order,
            "jingdong.asc.audit.refuse": self._refuse,
        }.get(method)
        if handler is None:
            raise JosError("4", "方法不存在", "Invalid method")
        return handler(a)

    @staticmethod
    def _summary(s: dict[str, Any]) -> dict[str, Any]:
        keys = ("serviceId", "orderId", "skuId", "wareName", "wareNum", "serviceStatus", "serviceStatusName",
                "customerExpect", "customerExpectName", "customerPin", "customerName", "customerTel",
                "applyTime", "updateTime")
        return {k: s[k] for k in keys}

    def _list(self, a: dict[str, Any]) -> dict[str, Any]:
        page_no, size = int(a.get("pageNumber") or 1), int(a.get("pageSize") or 10)
        if size > 100 or size < 1 or page_no < 1:
            return {"pageResult": {"success": False, "errorCode": "301", "errorMsg": "pageSize 范围 1-100"}}
        start, end = str(a.get("updateTimeBegin") or ""), str(a.get("updateTimeEnd") or "9999")
        self.list_log.append((start, end, page_no))
        self.churn()
        rows = sorted((s for s in self.services.values() if start <= s["updateTime"] <= end),
                      key=lambda s: (s["updateTime"], s["serviceId"]))
        page = rows[(page_no - 1) * size: page_no * size]
        return {"pageResult": {"success": True, "pageNumber": page_no, "pageSize": size,
                               "totalCount": len(rows), "data": [self._summary(s) for s in page]}}

    def _service(self, a: dict[str, Any]) -> dict[str, Any]:
        s = self.services.get(int(a.get("serviceId") or 0))
        if s is None:
            raise JosError("301", "服务单不存在", "Service order not found")
        return s

    def _view(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"result": {"success": True, "data": dict(self._service(a))}}

    def _order(self, a: dict[str, Any]) -> dict[str, Any]:
        order = self.orders.get(int(a.get("order_id") or 0))
        if order is None:
            return {"orderDetailInfo": {"apiResult": {"success": False, "englishErrCode": "order not found"}}}
        return {"orderDetailInfo": {"apiResult": {"success": True}, "orderInfo": order}}

    def _refuse(self, a: dict[str, Any]) -> dict[str, Any]:
        s = self._service(a)
        if s["serviceStatus"] not in (10001, 10002):
            return {"result": {"success": False, "errorCode": "302",
                               "errorMsg": f"当前状态不能审核 ({s['serviceStatusName']})"}}
        self.move(s, 10003, str(a.get("approveNotes") or ""))
        return {"result": {"success": True}}
