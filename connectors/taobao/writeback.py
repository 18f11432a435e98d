"""Taobao write-back: the hub's decision on a refund, carried out on Taobao.

A destination the sync rules can target. Each push names a Taobao ticket and
the status the hub moved it to; the destination re-reads the refund
(``taobao.refund.get``: its current status, amount, version and phase) and
makes the one call that brings Taobao there:

- ``awaiting_return`` → ``taobao.rp.returngoods.agree`` (卖家同意退货, with the
  configured return address);
- ``refund_pending`` / ``resolved`` → ``taobao.rp.refunds.agree`` (同意退款,
  ``refund_id|amount(fen)|version|phase``), only for the amount the hub saw;
- ``rejected`` → ``taobao.refund.refuse`` (拒绝退款, with ``refuse_message``).

When Taobao is already there (the change came *from* Taobao, or an earlier
attempt landed), nothing is called: the push succeeds as a no-op, so the
write-back never echoes the platform's own moves back at it. API references:
docs/platforms.md §1.5 (``bububa/opentaobao:model/refund/*APIRequest.go``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from connectors.taobao.client import TopAccess
from connectors.writeback import QuotaPaced, as_delivery, read_decision
from hub.config import DestinationConfig
from hub.errors import Permanent, Retryable
from hub.interfaces import Push, Receipt
from hub.quota import TokenBucket

DETAIL_FIELDS = "refund_id,status,refund_fee,has_good_return,refund_version,refund_phase,modified"
# The Taobao status each hub status asks for, and where it may be reached from.
TARGET = {"awaiting_return": "WAIT_BUYER_RETURN_GOODS", "refund_pending": "SUCCESS",
          "resolved": "SUCCESS", "rejected": "SELLER_REFUSE_BUYER"}
PAST_RETURN = ("WAIT_SELLER_CONFIRM_GOODS", "SUCCESS")


class ReturnAddress(BaseModel):
    """Where buyers send goods back (taobao.rp.returngoods.agree)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str
    post: str
    tel: str = ""
    mobile: str
    seller_address_id: int


class TaobaoWritebackConfig(QuotaPaced, DestinationConfig, TopAccess):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = None          # act only on tickets of this Taobao source
    mapping: str | None = "taobao_writeback"
    refuse_message: str = Field(default="经核实，该退款申请不符合退款条件，如有疑问请联系客服。",
                                min_length=2, max_length=200)
    return_address: ReturnAddress | None = None


def _fen(yuan: Any) -> int:
    return int(Decimal(str(yuan)) * 100)


class TaobaoWriteback:
    def __init__(self, config: TaobaoWritebackConfig):
        self.config = config
        self.client = config.top_client(TokenBucket(config.quota.rate, config.quota.burst),
                                        config.timeout, attempts=1)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        # TOP calls go through the signed httpx client, not the shared aiohttp session.
        decision, skip = read_decision(push, self.config.source, set(TARGET))
        if skip is not None:
            return skip
        return await as_delivery(self._carry_out(decision, TARGET[decision["to_status"]]))

    async def _carry_out(self, order: dict[str, Any], want: str) -> Receipt:
        refund_id = order["refund_id"]
        resp = await self.client.call("taobao.refund.get", refund_id=refund_id, fields=DETAIL_FIELDS)
        refund = resp.get("refund") or {}
        now = refund.get("status")
        if now == want or (want == "WAIT_BUYER_RETURN_GOODS" and now in PAST_RETURN):
            return Receipt(200, f"refund {refund_id} is already {now}")
        if want == "SELLER_REFUSE_BUYER":
            if now not in ("WAIT_SELLER_AGREE", "WAIT_SELLER_CONFIRM_GOODS"):
                raise Permanent(f"refund {refund_id} is {now}: it can no longer be refused")
            await self.client.call("taobao.refund.refuse", refund_id=refund_id,
                                   refuse_message=self.config.refuse_message,
                                   refund_phase=refund.get("refund_phase"),
                                   refund_version=refund.get("refund_version"))
            return Receipt(200, f"refused refund {refund_id}")
        if want == "WAIT_BUYER_RETURN_GOODS":
            return await self._agree_return(refund_id, refund, now)
        return await self._agree_refund(order, refund_id, refund, now)

    async def _agree_return(self, refund_id: Any, refund: dict[str, Any], now: Any) -> Receipt:
        addr = self.config.return_address
        if addr is None:
            raise Permanent("return_address is not configured: cannot agree a return on Taobao")
        if now != "WAIT_SELLER_AGREE" or not refund.get("has_good_return"):
            raise Permanent(f"refund {refund_id} is {now}: no return to agree")
        await self.client.call("taobao.rp.returngoods.agree", refund_id=refund_id, name=addr.name,
                               address=addr.address, post=addr.post, tel=addr.tel, mobile=addr.mobile,
                               seller_address_id=addr.seller_address_id,
                               refund_phase=refund.get("refund_phase"),
                               refund_version=refund.get("refund_version"))
        return Receipt(200, f"agreed the return of refund {refund_id}")

    async def _agree_refund(self, order: dict[str, Any], refund_id: Any, refund: dict[str, Any],
                            now: Any) -> Receipt:
        if now not in ("WAIT_SELLER_AGREE", "WAIT_SELLER_CONFIRM_GOODS"):
            raise Permanent(f"refund {refund_id} is {now}: it cannot be agreed")
        amount = _fen(refund.get("refund_fee", "0"))
        if order.get("refund_amount") is not None and int(order["refund_amount"]) != amount:
            # The buyer changed the amount since the hub decided: decide again.
            raise Permanent(f"refund {refund_id} now asks {amount} fen, the hub agreed "
                            f"{order['refund_amount']} fen")
        info = f"{refund_id}|{amount}|{refund.get('refund_version')}|{refund.get('refund_phase') or ''}"
        resp = await self.client.call("taobao.rp.refunds.agree", refund_infos=info)
        results = (resp.get("results") or {}).get("refund_mapping_result") or []
        failed = [r for r in results if not r.get("succ")]
        if failed or resp.get("is_success") is False:
            message = "; ".join(str(r.get("message")) for r in failed) or str(resp.get("msg"))
            if "版本" in message:  # the refund moved under us: re-read and try again
                raise Retryable(f"refund {refund_id}: {message}")
            raise Permanent(f"refund {refund_id}: {message}", body=message)
        return Receipt(200, f"agreed refund {refund_id} ({amount} fen)")
