"""A simulated Taobao Open Platform: the TOP gateway with a seller's refunds.

It checks every call as the gateway does — app key, timestamp within 10
minutes of its clock, ``v=2.0``, the signature for the given ``sign_method``,
the session — and answers failures with TOP's own ``error_response`` bodies
(codes 7, 25, 27, 29, …; docs/platforms.md §1.3). It meters calls per app and
answers code 7 "App Call Limited" with a ban time when over quota (or when
told to, ``quota.inject(n)``). Its store of trades and refunds moves through
Taobao's refund statuses over time; every move bumps ``modified`` and queues
a ``taobao_refund_*`` TMC message, consumed with
``taobao.tmc.messages.consume`` and removed by ``taobao.tmc.messages.confirm``
(unconfirmed messages are delivered again). ``churn_per_list_call`` moves
refunds while a poller pages, as a busy shop does on Double 11.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import orjson
from aiohttp import web

from connectors import fakedata
from connectors.simserver import SimServer
from connectors.taobao.client import SIGN_METHODS, response_key, sign
from connectors.window_poll import PLATFORM_TIME, platform_time
from hub.casts import SHANGHAI

TERMINAL = ("SUCCESS", "CLOSED")
TOPIC_FOR = {
    "WAIT_BUYER_RETURN_GOODS": "taobao_refund_RefundSellerAgreeAgreement",
    "WAIT_SELLER_CONFIRM_GOODS": "taobao_refund_RefundBuyerReturnGoods",
    "SELLER_REFUSE_BUYER": "taobao_refund_RefundSellerRefuseAgreement",
    "CLOSED": "taobao_refund_RefundClosed",
    "SUCCESS": "taobao_refund_RefundSuccess",
}
TB_REASONS = ["七天无理由退换货", "质量问题", "收到商品破损", "商品与描述不符", "发错货", "少件/漏发",
              "尺码不合适", "不喜欢/不想要", "未按约定时间发货", "其他"]


def _local(text: str) -> datetime:
    return datetime.strptime(text, PLATFORM_TIME).replace(tzinfo=SHANGHAI)


class TopError(Exception):
    def __init__(self, code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None):
        super().__init__(msg)
        self.body: dict[str, Any] = {"code": code, "msg": msg}
        if sub_code:
            self.body["sub_code"] = sub_code
        if sub_msg:
            self.body["sub_msg"] = sub_msg


@dataclass
class TaobaoSimulator(SimServer):
    app_key: str = "12345678"
    app_secret: str = "sandbox-app-secret"
    session: str = "6100e23657fb0b2d0c78568e55a3031134be9a3a5d4b3a365753805"
    seller_nick: str = "hub旗舰店"
    seed: int = 7
    redeliver_after: float = 30.0       # seconds before an unconfirmed message comes again
    gateway_path: ClassVar[str] = "/router/rest"
    terminal: ClassVar[tuple[Any, ...]] = TERMINAL
    session_valid: bool = True
    app_key_valid: bool = True
    # A bad day: this share of calls answered isp.remote-service-error before
    # anything is done (drawn from its own generator: the shop's data stays the seed's).
    fail_rate: float = 0.0
    fail_seed: int = 1
    fail_methods: frozenset[str] | None = None  # only these methods fail (None: any)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.refunds: dict[int, dict[str, Any]] = {}
        self.trades: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}     # id → message, until confirmed
        self._delivered: dict[int, datetime] = {}
        self._next_id = 181784773340365852               # ids past 2^53, as real ones are
        self._next_msg = 9_120_000_000_001
        self.calls: Counter[str] = Counter()
        self.listed: Counter[int] = Counter()  # refund id → times a list page returned it
        self.list_log: list[tuple[str, str, int]] = []  # (start_modified, end_modified, page_no)
        self.refusals: Counter[int] = Counter()
        self.failed: Counter[str] = Counter()  # method → calls answered with an injected failure
        self._fail_rng = random.Random(self.fail_seed)

    # ------------------------------------------------------------ the store

    def _now_text(self) -> str:
        return platform_time(self.clock())

    def _new_trade(self, created: str) -> dict[str, Any]:
        r = self.rng
        self._next_id += r.randint(1, 9999)
        tid = self._next_id
        sku, title, price = r.choice(fakedata.PRODUCTS)
        num = r.randint(1, 3)
        payment = f"{float(price) * num:.2f}"
        buyer = fakedata.name(r)
        trade = {
            "tid": tid, "status": "WAIT_BUYER_CONFIRM_GOODS", "payment": payment, "created": created,
            "modified": created, "buyer_nick": f"{buyer[0]}**", "buyer_open_uid": f"AAH{uuid.UUID(int=r.getrandbits(128)).hex[:21]}",
            "receiver_name": buyer, "receiver_mobile": fakedata.phone(r),
            "receiver_state": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区",
            "receiver_address": fakedata.address(r),
            "orders": {"order": [{"oid": tid, "num_iid": 600000000000 + r.randint(1, 99999), "title": title,
                                  "outer_sku_id": sku, "price": price, "num": num, "payment": payment}]},
        }
        self.trades[tid] = trade
        return trade

    def _new_refund(self, at: str, status: str = "WAIT_SELLER_AGREE",
                    has_good_return: bool | None = None) -> dict[str, Any]:
        r = self.rng
        trade = self._new_trade(at)
        order = trade["orders"]["order"][0]
        self._next_id += r.randint(1, 9999)
        drawn = r.random() < 0.6  # drawn either way: the rest of the shop stays the seed's
        has_return = drawn if has_good_return is None else has_good_return
        refund = {
            "refund_id": self._next_id, "tid": trade["tid"], "oid": order["oid"],
            "alipay_no": f"2026{r.randint(10**20, 10**21 - 1)}", "title": order["title"],
            "buyer_nick": trade["buyer_nick"], "buyer_open_uid": trade["buyer_open_uid"],
            "seller_nick": self.seller_nick, "total_fee": trade["payment"], "payment": trade["payment"],
            "refund_fee": f"{float(trade['payment']) * r.choice([1, 1, 1, 0.5]):.2f}",
            "status": status, "created": at, "modified": at,
            "good_status": "BUYER_RECEIVED" if has_return else "BUYER_NOT_RECEIVED",
            "has_good_return": has_return, "reason": r.choice(TB_REASONS),
            "desc": r.choice(["", "包装破了", "颜色和图片差别很大", "等了一周还没发货"]),
            "order_status": "WAIT_BUYER_CONFIRM_GOODS", "refund_phase": "aftersale" if has_return else "onsale",
            "num_iid": order["num_iid"], "num": order["num"], "price": order["price"],
            "outer_id": order["outer_sku_id"], "sku": "颜色分类:默认",
            "refund_version": int(_local(at).timestamp() * 1000),
        }
        self.refunds[refund["refund_id"]] = refund
        return refund

    def populate(self, count: int, since: datetime, until: datetime) -> None:
        """``count`` refunds already in the shop, modified at times spread over [since, until]."""
        span = (until - since).total_seconds()
        for i in range(count):
            at = platform_time(since + timedelta(seconds=span * i / max(1, count)))
            refund = self._new_refund(at)
            # History: some have moved on already.
            for _ in range(self.rng.choice([0, 0, 1, 1, 2, 3])):
                nxt = self.next_status(refund)
                if nxt is None:
                    break
                refund["status"] = nxt

    def create_refund(self, has_good_return: bool | None = None) -> dict[str, Any]:
        """A buyer asks for a refund now (with the goods back, or not, or as the dice say)."""
        refund = self._new_refund(self._now_text(), has_good_return=has_good_return)
        self._message("taobao_refund_RefundCreated", refund)
        return refund

    def records(self) -> dict[Any, dict[str, Any]]:
        return self.refunds

    def next_status(self, refund: dict[str, Any]) -> str | None:
        r, status = self.rng.random(), refund["status"]
        if status == "WAIT_SELLER_AGREE":
            if r < 0.7:
                return "WAIT_BUYER_RETURN_GOODS" if refund["has_good_return"] else "SUCCESS"
            return "SELLER_REFUSE_BUYER" if r < 0.9 else "CLOSED"
        if status == "WAIT_BUYER_RETURN_GOODS":
            return "WAIT_SELLER_CONFIRM_GOODS" if r < 0.85 else "CLOSED"
        if status == "WAIT_SELLER_CONFIRM_GOODS":
            return "SUCCESS"
        if status == "SELLER_REFUSE_BUYER":
            return "WAIT_SELLER_AGREE" if r < 0.5 else "CLOSED"
        return None

    def move(self, refund: dict[str, Any], status: str) -> None:
        came_from = refund["status"]
        refund["status"] = status
        if status == "WAIT_SELLER_CONFIRM_GOODS" and "sid" not in refund:
            # The buyer shipped the goods back: Taobao now knows the parcel.
            refund["company_name"] = self.rng.choice(["中通快递", "圆通速递", "顺丰速运", "韵达快递"])
            refund["sid"] = f"{self.rng.choice(['ZT', 'YT', 'SF', 'YD'])}{self.rng.randint(10**11, 10**12 - 1)}"
            refund["good_status"] = "BUYER_RETURNED_GOODS"
        refund["modified"] = self._now_text()
        refund["refund_version"] = int(_local(refund["modified"]).timestamp() * 1000)
        if status == "SUCCESS":
            self.trades[refund["tid"]]["status"] = "TRADE_CLOSED"
        topic = ("taobao_refund_RefundBuyerModifyAgreement" if came_from == "SELLER_REFUSE_BUYER"
                 and status == "WAIT_SELLER_AGREE" else TOPIC_FOR.get(status, "taobao_refund_RefundBuyerModifyAgreement"))
        self._message(topic, refund)

    def _message(self, topic: str, refund: dict[str, Any]) -> None:
        self._next_msg += 1
        content = {"buyer_nick": refund["buyer_nick"], "buyer_open_uid": refund["buyer_open_uid"],
                   "refund_phase": refund["refund_phase"], "refund_fee": refund["refund_fee"],
                   "modified": refund["modified"], "bill_type": "return_bill" if refund["has_good_return"]
                   else "refund_bill", "oid": refund["oid"], "seller_nick": refund["seller_nick"],
                   "refund_id": refund["refund_id"], "tid": refund["tid"]}
        self.messages[self._next_msg] = {
            "id": self._next_msg, "topic": topic, "pub_app_key": "12497914", "pub_time": self._now_text(),
            "user_id": 2206000000001, "user_nick": self.seller_nick,
            "content": orjson.dumps(content).decode()}

    # ------------------------------------------------------------ the gateway

    async def handle(self, request: web.Request) -> web.Response:
        params = await self.gateway_params(request)
        method = params.get("method", "")
        self.calls[method] += 1
        try:
            self._check(params)
            if (self.fail_rate and (self.fail_methods is None or method in self.fail_methods)
                    and self._fail_rng.random() < self.fail_rate):
                self.failed[method] += 1
                raise TopError(15, "Remote service error", "isp.remote-service-error", "服务暂时不可用，请稍后重试")
            result = self._dispatch(method, params)
            body: dict[str, Any] = {response_key(method): result | {"request_id": self._request_id()}}
        except TopError as err:
            self.refusals[err.body["code"]] += 1
            body = {"error_response": err.body | {"request_id": self._request_id()}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _request_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex[:13]

    def _check(self, p: dict[str, str]) -> None:
        for name, code, msg in (("method", 21, "Missing Method"), ("app_key", 28, "Missing App Key"),
                                ("timestamp", 30, "Missing Timestamp"), ("sign", 24, "Missing signature"),
                                ("v", 32, "Missing Version")):
            if not p.get(name):
                raise TopError(code, msg)
        if p["app_key"] != self.app_key or not self.app_key_valid:
            raise TopError(29, "Invalid app Key", "isv.appkey-not-exists", "应用不存在或AppKey无效")
        try:
            ts = _local(p["timestamp"])
        except ValueError:
            raise TopError(31, "Invalid Timestamp", None, "时间戳格式应为 yyyy-MM-dd HH:mm:ss") from None
        if abs((ts - self.clock()).total_seconds()) > 600:
            raise TopError(31, "Invalid Timestamp", None, "时间戳与服务器时间相差超过10分钟")
        if p["v"] != "2.0":
            raise TopError(33, "Invalid Version")
        sign_method = p.get("sign_method", "md5")
        if sign_method not in SIGN_METHODS:
            raise TopError(25, "Invalid signature", None, f"不支持的签名方法 {sign_method}")
        if sign(p, self.app_secret, sign_method) != p["sign"]:
            raise TopError(25, "Invalid signature")
        ban = self.quota.take()
        if ban is not None:
            raise TopError(7, "App Call Limited", "accesscontrol.limited-by-app-access-count",
                           f"This ban will last for {int(ban + 0.999)} more seconds")
        if p["method"].startswith("taobao.tmc."):
            return  # TMC calls are the app's, not the seller's: no session
        if not p.get("session"):
            raise TopError(26, "Missing Session")
        if p["session"] != self.session or not self.session_valid:
            raise TopError(27, "Invalid session", "invalid-sessionkey", "SessionKey非法或已过期")

    def _dispatch(self, method: str, p: dict[str, str]) -> dict[str, Any]:
        handler = {
            "taobao.refunds.receive.get": self._refunds_receive_get,
            "taobao.refund.get": self._refund_get,
            "taobao.trade.fullinfo.get": self._trade_get,
            "taobao.tmc.messages.consume": self._tmc_consume,
            "taobao.tmc.messages.confirm": self._tmc_confirm,
            "taobao.rp.refunds.agree": self._refunds_agree,
            "taobao.refund.refuse": self._refund_refuse,
            "taobao.rp.returngoods.agree": self._returngoods_agree,
        }.get(method)
        if handler is None:
            raise TopError(22, "Invalid method")
        return handler(p)

    @staticmethod
    def _fields(p: dict[str, str]) -> list[str]:
        if not p.get("fields"):
            raise TopError(40, "Missing required arguments:fields")
        return [f.strip() for f in p["fields"].split(",") if f.strip()]

    @staticmethod
    def _pick(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        return {f: record[f] for f in fields if f in record}

    @staticmethod
    def _int(p: dict[str, str], name: str, default: int | None = None) -> int:
        raw = p.get(name)
        if raw is None or raw == "":
            if default is None:
                raise TopError(40, f"Missing required arguments:{name}")
            return default
        try:
            return int(raw)
        except ValueError:
            raise TopError(41, f"Invalid arguments:{name}") from None

    def _refunds_receive_get(self, p: dict[str, str]) -> dict[str, Any]:
        fields = self._fields(p)
        page_no, page_size = self._int(p, "page_no", 1), self._int(p, "page_size", 40)
        if page_size > 100 or page_size < 1 or page_no < 1:
            raise TopError(41, "Invalid arguments:page_size", "isv.invalid-parameter", "page_size 最大 100")
        self.churn()
        start, end = p.get("start_modified") or "", p.get("end_modified") or "9999"
        self.list_log.append((start, end, page_no))
        for value in filter(None, (p.get("start_modified"), p.get("end_modified"))):
            try:
                _local(value)
            except ValueError:
                raise TopError(41, "Invalid arguments:start_modified", "isv.invalid-parameter",
                               "时间格式应为 yyyy-MM-dd HH:mm:ss") from None
        # Fixed-width local times compare as text.
        rows = [r for r in self.refunds.values()
                if start <= r["modified"] <= end and (not p.get("status") or r["status"] == p["status"])]
        rows.sort(key=lambda r: (r["modified"], r["refund_id"]))
        page = rows[(page_no - 1) * page_size: page_no * page_size]
        self.listed.update(r["refund_id"] for r in page)
        out: dict[str, Any] = {}
        if page:
            out["refunds"] = {"refund": [self._pick(r, fields) for r in page]}
        if p.get("use_has_next") == "true":
            out["has_next"] = page_no * page_size < len(rows)
        else:
            out["total_results"] = len(rows)
        return out

    def _refund(self, p: dict[str, str]) -> dict[str, Any]:
        refund = self.refunds.get(self._int(p, "refund_id"))
        if refund is None:
            raise TopError(15, "Remote service error", "isv.refund-not-exist", "退款单不存在")
        return refund

    def _refund_get(self, p: dict[str, str]) -> dict[str, Any]:
        return {"refund": self._pick(self._refund(p), self._fields(p))}

    def _trade_get(self, p: dict[str, str]) -> dict[str, Any]:
        trade = self.trades.get(self._int(p, "tid"))
        if trade is None:
            raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易不存在")
        return {"trade": self._pick(trade, self._fields(p))}

    def _tmc_consume(self, p: dict[str, str]) -> dict[str, Any]:
        quantity = min(200, self._int(p, "quantity", 100))
        now = self.clock()
        due = [m for mid, m in self.messages.items()
               if mid not in self._delivered
               or (now - self._delivered[mid]).total_seconds() >= self.redeliver_after][:quantity]
        for m in due:
            self._delivered[m["id"]] = now
        return {"messages": {"tmc_message": due}} if due else {}

    def _tmc_confirm(self, p: dict[str, str]) -> dict[str, Any]:
        for raw in (p.get("s_message_ids") or "").split(","):
            if raw.strip().isdigit():
                self.messages.pop(int(raw), None)
                self._delivered.pop(int(raw), None)
        return {"is_success": True}

    def _refunds_agree(self, p: dict[str, str]) -> dict[str, Any]:
        results = []
        for info in (p.get("refund_infos") or "").split(","):
            parts = info.split("|")
            if len(parts) < 3:
                raise TopError(41, "Invalid arguments:refund_infos", "isv.invalid-parameter",
                               "refund_infos 格式为 refund_id|amount|version|phase")
            refund = self.refunds.get(int(parts[0]))
            ok, message = True, ""
            if refund is None:
                ok, message = False, "退款单不存在"
            elif refund["status"] not in ("WAIT_SELLER_AGREE", "WAIT_SELLER_CONFIRM_GOODS"):
                ok, message = False, f"退款状态不允许同意退款 ({refund['status']})"
            elif int(parts[1]) != round(float(refund["refund_fee"]) * 100):
                ok, message = False, "退款金额不一致"
            elif int(parts[2]) != refund["refund_version"]:
                ok, message = False, "退款版本已过期"
            elif refund["status"] == "WAIT_SELLER_AGREE" and refund["has_good_return"]:
                self.move(refund, "WAIT_BUYER_RETURN_GOODS")
            else:
                self.move(refund, "SUCCESS")
            results.append({"refund_id": int(parts[0]), "succ": ok, "message": message})
        return {"is_success": all(r["succ"] for r in results), "msg": "",
                "results": {"refund_mapping_result": results}}

    def _refund_refuse(self, p: dict[str, str]) -> dict[str, Any]:
        refund = self._refund(p)
        text = p.get("refuse_message") or ""
        if not 2 <= len(text) <= 200:
            raise TopError(15, "Remote service error", "isv.invalid-parameter:refuse_message",
                           "拒绝理由长度应为 2-200 个字符")
        if refund["status"] not in ("WAIT_SELLER_AGREE", "WAIT_SELLER_CONFIRM_GOODS"):
            raise TopError(15, "Remote service error", "isv.refund-status-error",
                           f"当前退款状态不能拒绝 ({refund['status']})")
        self.move(refund, "SELLER_REFUSE_BUYER")
        return {"is_success": True, "refund": {"refund_id": refund["refund_id"],
                                                "status": refund["status"], "modified": refund["modified"]}}

    def _returngoods_agree(self, p: dict[str, str]) -> dict[str, Any]:
        refund = self._refund(p)
        for name in ("name", "address", "post", "mobile", "seller_address_id"):
            if not p.get(name):
                raise TopError(40, f"Missing required arguments:{name}")
        if refund["status"] != "WAIT_SELLER_AGREE" or not refund["has_good_return"]:
            raise TopError(15, "Remote service error", "isv.refund-status-error",
                           f"当前退款状态不能同意退货 ({refund['status']})")
        self.move(refund, "WAIT_BUYER_RETURN_GOODS")
        return {"is_success": True}
