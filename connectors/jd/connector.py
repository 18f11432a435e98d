"""JD source: after-sales service orders (服务单) polled from JOS.

References (docs/platforms.md §2.3):
- ``jingdong.asc.query.list`` (服务单列表): request parameters from JD's
  official SDK class ``AscQueryListRequest`` (``updateTimeBegin``/``End``,
  ``pageNumber``, ``pageSize``, ``buId``, ``operatePin`` …).
- ``jingdong.asc.query.view`` (服务单详情): ``AscQueryViewRequest``
  (``serviceId``, ``orderId``, ``buId``, ``operatePin``).
- ``jingdong.pop.order.get`` for the order the service belongs to.

JD's *response* field names and its numeric ``serviceStatus`` and
``customerExpect`` tables for these APIs were not found in a source we could
read. Where the answer's lists sit is configurable (``list_items``,
``list_total``, ``view_item``, ``order_item``; defaults follow JOS's usual
``pageResult.data`` / ``result.data`` shape), and the field names and codes
live in ``mappings/jd.yaml`` — check both against the JOS console for your
app before going live.

Events are stored as ``{"service": {...list row + detail...}, "order":
{...} | null, "via": "poll"}``, deduplicated by service id + update time +
status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import ConfigDict, Field

from connectors.jd.client import JosAccess
from connectors.jd.writeback import JdWriteback, JdWritebackConfig
from connectors.lookup_cache import LookupCache
from connectors.window_poll import Page, WindowedPoll, platform_time
from hub.config import PolledSourceConfig
from hub.errors import SourceRejected
from hub.interfaces import ConnectorSpec, DestinationKind, InboundEvent, PollStream, SourceKind
from hub.mapping import compile_template_path
from hub.quota import TokenBucket


class JdSourceConfig(PolledSourceConfig, JosAccess):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fetch_detail: bool = True         # jingdong.asc.query.view per service
    fetch_orders: bool = True         # jingdong.pop.order.get per new order
    page_size: int = Field(default=50, ge=1, le=100)
    list_items: str = "pageResult.data"
    list_total: str = "pageResult.totalCount"
    view_item: str = "result.data"
    order_item: str = "orderDetailInfo.orderInfo"


ORDER_FIELDS = "orderId,orderTotalPrice,orderPayment,orderState,orderStartTime,pin,consigneeInfo,itemInfoList"


class JdSource:
    def __init__(self, config: JdSourceConfig):
        self.config = config
        self.quota = TokenBucket(config.quota.rate, config.quota.burst)
        self.client = config.jos_client(self.quota, config.timeout)
        self._items = compile_template_path(config.list_items)
        self._total = compile_template_path(config.list_total)
        self._view = compile_template_path(config.view_item)
        self._order = compile_template_path(config.order_item)
        self._orders = LookupCache(self._fetch_order, what="order")

    def streams(self) -> list[PollStream]:
        return [WindowedPoll("services", self.config, self._page, self._event)]

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _page(self, start: datetime, end: datetime, page_no: int, size: int) -> Page:
        resp = await self.client.call("jingdong.asc.query.list", **self.config.operator(),
                                      updateTimeBegin=platform_time(start), updateTimeEnd=platform_time(end),
                                      pageNumber=page_no, pageSize=size)
        self._check_success(resp, "jingdong.asc.query.list")
        items = self._items(resp)
        return Page(items if isinstance(items, list) else [], int(self._total(resp) or 0))

    @staticmethod
    def _check_success(resp: dict[str, Any], method: str) -> None:
        # The business result carries its own flag beside the envelope's code.
        for inner in resp.values():
            if isinstance(inner, dict) and inner.get("success") is False:
                raise SourceRejected(f"JOS {method}: {inner.get('errorCode', '')} "
                                     f"{inner.get('errorMsg', 'business error')}".strip())

    async def detail(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.config.fetch_detail:
            return row
        resp = await self.client.call("jingdong.asc.query.view", **self.config.operator(),
                                      serviceId=row.get("serviceId"), orderId=row.get("orderId"))
        self._check_success(resp, "jingdong.asc.query.view")
        found = self._view(resp)
        # The detail is the freshest state (its own status and update time);
        # the list row fills in what the detail leaves out.
        return row | found if isinstance(found, dict) else row

    async def _fetch_order(self, order_id: str) -> dict[str, Any] | None:
        resp = await self.client.call("jingdong.pop.order.get", order_id=order_id,
                                      optional_fields=ORDER_FIELDS)
        found = self._order(resp)
        return found if isinstance(found, dict) else None

    async def _event(self, row: Any) -> InboundEvent | None:
        if not isinstance(row, dict):
            raise TypeError(f"a service is an object, not {type(row).__name__}")
        service = await self.detail(row)
        order = await self._orders.get(service.get("orderId")) if self.config.fetch_orders else None
        doc = {"service": service, "order": order, "via": "poll"}
        return InboundEvent(body=orjson.dumps(doc).decode(), document=doc)


def _demo() -> Any:
    from connectors.jd.demo import JdDemo

    return JdDemo()


SPEC = ConnectorSpec(
    name="jd",
    demo=_demo,
    sources=(SourceKind("jd", JdSourceConfig, poller=JdSource,
                        summary="JD JOS after-sales service poll (list + detail)"),),
    destinations=(DestinationKind("jd", JdWritebackConfig, factory=JdWriteback,
                                  summary="JD review write-back (refuse)"),),
)
