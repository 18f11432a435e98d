"""End to end on the trunk: signed website request → ticket linked to its
order and customer → a push with a valid Standard Webhooks signature."""

from __future__ import annotations

import json

import aiohttp
import sqlalchemy as sa

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub.daemon import Hub
from hub.records import customers, identities, orders, outbox, raw_events, ticket_events, tickets
from tests.conftest import count, wait_until


async def post(http: aiohttp.ClientSession, hub: Hub, body: bytes, headers: dict[str, str],
               source: str = "site") -> tuple[int, dict]:
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/{source}", data=body,
                         headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_signed_request_becomes_linked_ticket_and_signed_push(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    msg = website.request(kind="return")
    body, headers = website.sign(msg)
    status, reply = await post(http, hub, body, headers)
    assert (status, reply) == (200, {"status": "accepted"})

    await receiver.wait_for(1)
    push = receiver.received[0]
    assert push.signature_ok and push.msg_id.startswith("msg_hook_")
    assert push.body["type"] == "ticket.created"
    data = push.body["data"]
    assert data["ticket"]["external_id"] == msg["data"]["request_id"]
    assert data["ticket"]["type"] == "return_refund"
    assert data["ticket"]["refund_amount"] == round(float(msg["data"]["amount"]) * 100)
    assert data["order"]["external_id"] == msg["data"]["order_id"]
    assert data["order"]["is_stub"] is True
    name, phone, email = (msg["data"]["customer"][k] for k in ("name", "phone", "email"))
    # Masked: pii is off. The name keeps its first character only, the e-mail its domain.
    assert data["customer"]["display_name"] == name[0] + "*" * min(3, len(name) - 1)
    assert data["customer"]["phone"] == phone[:3] + "****" + phone[-4:]
    assert data["customer"]["email"] == email[0] + "***@" + email.split("@")[1]
    assert {"kind": "email", "value": email[0] + "***@" + email.split("@")[1]} in data["customer"]["identities"]
    pushed = json.dumps(push.body, ensure_ascii=False)
    assert email not in pushed and name not in pushed
    assert data["change"] == {"from": None, "to": "new"}

    async with hub.db.read() as conn:
        t = (await conn.execute(sa.select(tickets))).one()
        o = (await conn.execute(sa.select(orders))).one()
        c = (await conn.execute(sa.select(customers))).one()
        kinds = {r.kind for r in (await conn.execute(sa.select(identities))).all()}
    assert t.order_id == o.id and t.customer_id == c.id == o.customer_id
    assert kinds == {"site_user", "phone", "email"}


async def test_same_request_twice_is_one_ticket_and_one_push(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    msg = website.request()
    body, headers = website.sign(msg)
    assert (await post(http, hub, body, headers))[1] == {"status": "accepted"}
    assert (await post(http, hub, body, headers))[1] == {"status": "duplicate"}
    # The site re-sends the same request as a *new* message (new webhook-id):
    # stored as a second raw event, but it changes nothing, so no second push.
    body2, headers2 = website.sign(msg)
    assert (await post(http, hub, body2, headers2))[0] == 200

    await wait_until(lambda: _done(hub, 2))
    await receiver.wait_for(1)
    await wait_until(lambda: _delivered(hub, 1))
    assert await count(hub, tickets) == 1
    assert await count(hub, outbox) == 1
    assert len(receiver.unique) == 1


async def _done(hub: Hub, n: int) -> bool:
    return await count(hub, raw_events, raw_events.c.state == "done") == n


async def _delivered(hub: Hub, n: int) -> bool:
    return await count(hub, outbox, outbox.c.state == "delivered") == n


async def test_status_updates_move_the_ticket_and_stale_ones_do_not(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC) - timedelta(minutes=3)
    msg = website.request(when=t0)
    rid = msg["data"]["request_id"]
    await post(http, hub, *website.sign(msg))
    newer = website.request(request_id=rid, order_id=msg["data"]["order_id"], event_type="aftersale.updated",
                            status="awaiting_return", when=t0 + timedelta(minutes=2))
    await post(http, hub, *website.sign(newer))
    older = website.request(request_id=rid, order_id=msg["data"]["order_id"], event_type="aftersale.updated",
                            status="pending_review", when=t0 + timedelta(minutes=1))
    await post(http, hub, *website.sign(older))
    await wait_until(lambda: _done(hub, 3))
    await receiver.wait_for(2)
    async with hub.db.read() as conn:
        t = (await conn.execute(sa.select(tickets))).one()
        kinds = [r.kind for r in (await conn.execute(
            sa.select(ticket_events.c.kind).where(ticket_events.c.kind.in_(
                ["created", "status_changed", "stale"])).order_by(ticket_events.c.id))).all()]
    assert t.status == "awaiting_return"
    assert kinds == ["created", "status_changed", "stale"]
    types = [r.body["data"]["change"]["to"] for r in receiver.unique.values()]
    assert types == ["new", "awaiting_return"]
