"""Taobao/Tmall source: refunds polled from TOP, refund messages taken from TMC.

References (docs/platforms.md §1):
- ``taobao.refunds.receive.get`` (查询卖家收到的退款列表): fields, statuses,
  ``start_modified``/``end_modified``, ``page_no``/``page_size`` (max 100),
  ``total_results`` — developer.alibaba.com/docs/doc.htm?treeId=568&articleId=52
  and ``bububa/opentaobao:model/refund/TaobaoRefundsReceiveGetAPIRequest.go``.
- ``taobao.refund.get`` (detail) and the Refund object:
  ``bububa/opentaobao:model/refund/Refund.go``.
- ``taobao.trade.fullinfo.get`` for the order the refund belongs to.
- TMC: ``taobao.tmc.messages.consume`` / ``taobao.tmc.messages.confirm``
  (``bububa/opentaobao:model/tmc/*``); the ``taobao_refund_*`` topics and their
  ``content`` JSON (ids that do not fit a double: parsed as integers).

Every event stored has the same shape whatever brought it — ``{"refund":
{...full refund...}, "trade": {...} | null, "via": "poll" | "message"}`` — and
the same dedupe key (refund id + modified), so a refund seen by poll and by
message at the same version is one raw event, and its versions are one ticket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog
from pydantic import ConfigDict, Field

from connectors.lookup_cache import LookupCache
from connectors.taobao.client import TopAccess
from connectors.taobao.writeback import TaobaoWriteback, TaobaoWritebackConfig
from connectors.window_poll import Page, WindowedPoll, each_event, platform_time
from hub.config import Duration, PolledSourceConfig
from hub.errors import SourceRejected, SourceTransient
from hub.interfaces import (
    ConnectorSpec,
    DestinationKind,
    InboundEvent,
    PollBatch,
    PollStream,
    SourceKind,
)
from hub.quota import TokenBucket

log = structlog.get_logger("connectors.taobao")

REFUND_FIELDS = ("refund_id,tid,oid,alipay_no,title,buyer_nick,buyer_open_uid,seller_nick,total_fee,"
                 "status,created,refund_fee,good_status,company_name,sid,payment,reason,desc,"
                 "has_good_return,modified,order_status,refund_phase,num_iid,num,price,outer_id,sku")
TRADE_FIELDS = ("tid,status,payment,created,modified,buyer_nick,buyer_open_uid,receiver_name,"
                "receiver_mobile,receiver_state,receiver_city,receiver_district,receiver_address,orders")
REFUND_TOPIC_PREFIX = "taobao_refund_"
REREADS_AT_ONCE = 8  # refunds of one TMC batch re-read concurrently


class TaobaoSourceConfig(PolledSourceConfig, TopAccess):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: list[Literal["poll", "messages"]] = Field(default_factory=lambda: ["poll", "messages"])
    messages_every: Duration = 5.0
    tmc_group: str = "default"
    # Read each refund's trade (taobao.trade.fullinfo.get) to link a full order
    # and the buyer's contact; one call per new trade, inside the quota.
    fetch_orders: bool = True
    page_size: int = Field(default=100, ge=1, le=100)


def _event(refund: dict[str, Any], trade: dict[str, Any] | None, via: str,
           message: dict[str, Any] | None = None) -> InboundEvent:
    doc: dict[str, Any] = {"refund": refund, "trade": trade, "via": via}
    if message is not None:
        doc["message"] = message
    return InboundEvent(body=orjson.dumps(doc).decode(), document=doc)


def _list(container: Any, key: str) -> list[Any]:
    """TOP's JSON wraps lists: ``{"refunds": {"refund": [...]}}``; absent when empty."""
    if not isinstance(container, dict):
        return []
    items = container.get(key)
    return items if isinstance(items, list) else []


class TaobaoSource:
    def __init__(self, config: TaobaoSourceConfig):
        self.config = config
        self.quota = TokenBucket(config.quota.rate, config.quota.burst)
        self.client = config.top_client(self.quota, config.timeout)
        self._trades = LookupCache(self._fetch_trade, what="trade")

    def streams(self) -> list[PollStream]:
        out: list[PollStream] = []
        if "poll" in self.config.mode:
            out.append(WindowedPoll("refunds", self.config, self._refund_page, self._refund_event))
        if "messages" in self.config.mode:
            out.append(TmcStream(self))
        return out

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------ API calls

    async def _refund_page(self, start: datetime, end: datetime, page_no: int, size: int) -> Page:
        resp = await self.client.call(
            "taobao.refunds.receive.get", fields=REFUND_FIELDS, start_modified=platform_time(start),
            end_modified=platform_time(end), page_no=page_no, page_size=size, use_has_next=False)
        return Page(_list(resp.get("refunds"), "refund"), int(resp.get("total_results") or 0))

    async def refund_detail(self, refund_id: Any) -> dict[str, Any]:
        resp = await self.client.call("taobao.refund.get", refund_id=refund_id, fields=REFUND_FIELDS)
        refund = resp.get("refund")
        if not isinstance(refund, dict):
            raise SourceRejected(f"taobao.refund.get {refund_id}: no refund in the answer")
        return refund

    async def trade(self, tid: Any) -> dict[str, Any] | None:
        return await self._trades.get(tid) if self.config.fetch_orders else None

    async def _fetch_trade(self, tid: str) -> dict[str, Any] | None:
        resp = await self.client.call("taobao.trade.fullinfo.get", tid=tid, fields=TRADE_FIELDS)
        trade = resp.get("trade")
        return trade if isinstance(trade, dict) else None

    async def _refund_event(self, refund: Any) -> InboundEvent | None:
        if not isinstance(refund, dict):
            raise TypeError(f"a refund is an object, not {type(refund).__name__}")
        return _event(refund, await self.trade(refund.get("tid")), "poll")


class TmcStream:
    """Refund messages: consume a batch, re-read each refund, store, then confirm.

    Confirmation happens only after the events are committed; a crash in
    between makes TMC deliver them again, and the dedupe key drops the repeat.
    A message whose refund could not be re-read for a passing platform error
    is left unconfirmed (TMC delivers it again) while the rest of its batch is
    stored and confirmed: with a hundred re-reads a batch, one failing must
    not send the other ninety-nine round again.
    """

    name = "messages"
    backfill = False  # a queue: what was confirmed is gone (the refunds list is backfilled instead)

    def __init__(self, source: TaobaoSource, quantity: int = 100):
        self.source = source
        self.interval = source.config.messages_every
        self.quantity = quantity

    async def poll(self, cursor: Any) -> AsyncIterator[PollBatch]:
        client, group = self.source.client, self.source.config.tmc_group
        confirmed = int((cursor or {}).get("confirmed", 0))
        while True:
            resp = await client.call("taobao.tmc.messages.consume", group_name=group,
                                     quantity=self.quantity)
            messages = _list(resp.get("messages"), "tmc_message")
            if not messages:
                return
            events, read = await self._events(messages)
            ids = ",".join(str(m.get("id")) for m in read if isinstance(m, dict) and m.get("id") is not None)
            confirmed += len(read)

            async def confirm(ids: str = ids) -> None:
                if ids:
                    await client.call("taobao.tmc.messages.confirm", group_name=group, s_message_ids=ids)

            yield PollBatch(events, {"confirmed": confirmed}, after_commit=confirm)

    async def _events(self, messages: list[Any]) -> tuple[list[InboundEvent], list[Any]]:
        """The events of the messages that could be read, and those messages.

        Re-reads run a few at a time (the quota still paces them), so one
        refund's retry back-off does not hold up the batch behind it."""
        gate = asyncio.Semaphore(REREADS_AT_ONCE)

        async def one(msg: Any) -> list[InboundEvent] | SourceTransient:
            async with gate:
                try:
                    return await each_event([msg], self._event)
                except SourceTransient as err:  # a ban or bad credentials stop the round instead
                    return err

        events: list[InboundEvent] = []
        read: list[Any] = []
        failed: SourceTransient | None = None
        for msg, got in zip(messages, await asyncio.gather(*(one(m) for m in messages)), strict=True):
            if isinstance(got, SourceTransient):
                failed = got
                continue
            events.extend(got)
            read.append(msg)
        if failed is not None:
            if not read:
                raise failed  # nothing got through: the platform is failing, not one refund
            log.warning("TMC messages left for redelivery: their refunds could not be read now",
                        left=len(messages) - len(read), error=str(failed))
        return events, read

    async def _event(self, msg: Any) -> InboundEvent | None:
        if not isinstance(msg, dict):
            raise TypeError(f"a TMC message is an object, not {type(msg).__name__}")
        if not str(msg.get("topic", "")).startswith(REFUND_TOPIC_PREFIX):
            return None
        try:
            content = orjson.loads(msg.get("content") or "{}")
        except orjson.JSONDecodeError:
            log.warning("TMC message content is not JSON; skipped", message_id=msg.get("id"),
                        topic=msg.get("topic"))
            return None
        refund_id = content.get("refund_id") if isinstance(content, dict) else None
        if refund_id is None:
            log.warning("TMC refund message without refund_id; skipped", message_id=msg.get("id"))
            return None
        try:
            # The message is a trigger: the refund as it is now is what we store.
            refund = await self.source.refund_detail(refund_id)
        except SourceRejected as err:
            log.warning("refund in TMC message not readable; skipped", refund_id=str(refund_id),
                        error=str(err))
            return None
        meta = {"id": msg.get("id"), "topic": msg.get("topic"), "pub_time": msg.get("pub_time")}
        return _event(refund, await self.source.trade(refund.get("tid")), "message", meta)





def _demo() -> Any:
    from connectors.taobao.demo import TaobaoDemo

    return TaobaoDemo()


SPEC = ConnectorSpec(
    name="taobao",
    demo=_demo,
    sources=(SourceKind("taobao", TaobaoSourceConfig, poller=TaobaoSource,
                        summary="Taobao/Tmall TOP refund poll + TMC refund messages"),),
    destinations=(DestinationKind("taobao", TaobaoWritebackConfig, factory=TaobaoWriteback,
                                  summary="Taobao refund write-back (agree, refuse, agree return)"),),
)
