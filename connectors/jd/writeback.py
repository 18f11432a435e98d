"""JD write-back: the hub's review decision on an after-sales service, on JD.

``rejected`` → ``jingdong.asc.audit.refuse`` (审核拒绝; parameters from JD's
SDK class ``AscAuditRefuseRequest``: ``serviceId``, ``orderId``,
``approveNotes``, ``buId``, ``operatePin``, ``operateNick``). The service is
re-read first (``jingdong.asc.query.view``): already refused → nothing is
called; no longer under review → permanent failure. JD's approve calls differ
by how the goods come back (``jingdong.asc.audit.homepick``, ``.send``,
``.reissue`` …) and are left to the JD console for now. Status codes are
configurable, as in ``mappings/jd.yaml``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import ConfigDict, Field

from connectors.jd.client import JosAccess
from connectors.writeback import QuotaPaced, as_delivery, read_decision
from hub.config import DestinationConfig
from hub.errors import Permanent, SourceRejected
from hub.interfaces import Push, Receipt
from hub.mapping import compile_template_path
from hub.quota import TokenBucket


class JdWritebackConfig(QuotaPaced, DestinationConfig, JosAccess):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operate_nick: str | None = None
    source: str | None = None
    mapping: str | None = "jd_writeback"
    refuse_notes: str = Field(default="经核实不符合售后政策，如有疑问请联系客服。", min_length=2, max_length=200)
    reviewable_statuses: list[int] = Field(default_factory=lambda: [10001, 10002])
    refused_statuses: list[int] = Field(default_factory=lambda: [10003])
    view_item: str = "result.data"


class JdWriteback:
    def __init__(self, config: JdWritebackConfig):
        self.config = config
        self.client = config.jos_client(TokenBucket(config.quota.rate, config.quota.burst),
                                        config.timeout, attempts=1)
        self._view = compile_template_path(config.view_item)

    def _operator(self) -> dict[str, Any]:
        return self.config.operator() | {"operateNick": self.config.operate_nick}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        decision, skip = read_decision(push, self.config.source, {"rejected"})
        if skip is not None:
            return skip
        return await as_delivery(self._refuse(decision))

    async def _refuse(self, decision: dict[str, Any]) -> Receipt:
        service_id = decision["service_id"]
        resp = await self.client.call("jingdong.asc.query.view", **self._operator(),
                                      serviceId=service_id, orderId=decision.get("order_id"))
        service = self._view(resp)
        if not isinstance(service, dict):
            raise SourceRejected(f"JOS jingdong.asc.query.view {service_id}: no service in the answer")
        status = service.get("serviceStatus")
        if status in self.config.refused_statuses:
            return Receipt(200, f"service {service_id} is already refused")
        if status not in self.config.reviewable_statuses:
            raise Permanent(f"service {service_id} is {status} ({service.get('serviceStatusName', '')}): "
                            "no longer under review")
        resp = await self.client.call("jingdong.asc.audit.refuse", **self._operator(), serviceId=service_id,
                                      orderId=decision.get("order_id"), approveNotes=self.config.refuse_notes)
        result = resp.get("result")
        if isinstance(result, dict) and result.get("success") is False:
            raise Permanent(f"service {service_id}: {result.get('errorCode', '')} {result.get('errorMsg', '')}")
        return Receipt(200, f"refused service {service_id}")
