"""The admin API against a running hub: tokens and roles, every endpoint
walked for PII with a token without the grant, a dead letter retried through
it and delivered, and the action in the audit log."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import Customer, WebsiteSimulator
from hub.daemon import Hub
from hub.registry import Registry
from tests.conftest import dead_letter, make_config, running, wait_until

TOKENS = {"viewer": "view-token-0123456789", "operator": "ops-token-0123456789", "admin": "lead-token-0123456789"}
PERSON = Customer("u5521", "欧阳娜娜", "13912345678", "nana@example.com", "杭州市西湖区文三路 99 号 3 幢")


@pytest.fixture
async def admin_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
                    receiver: Receiver) -> AsyncIterator[Hub]:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      security={"pii_key": pii_key, "tokens": [
                          {"name": "ann", "token": TOKENS["viewer"], "role": "viewer"},
                          {"name": "bob", "token": TOKENS["operator"], "role": "operator"},
                          {"name": "cho", "token": TOKENS["admin"], "role": "admin", "pii": True}]})
    async with running(cfg, registry) as h:
        yield h


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def _get(http: aiohttp.ClientSession, hub: Hub, path: str, role: str | None = "viewer",
               ) -> tuple[int, Any, aiohttp.ClientResponse]:
    """(status, the answer — JSON parsed, a spreadsheet as its text —, the response)."""
    async with http.get(f"http://127.0.0.1:{hub.port}{path}", headers=_auth(role) if role else {}) as r:
        if r.content_type == "application/json":
            return r.status, await r.json(), r
        return r.status, _spreadsheet_text(await r.read()), r


def _spreadsheet_text(body: bytes) -> str:
    """A CSV's text, or every XML part of an XLSX (a zip) as text."""
    if body.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            return "\n".join(z.read(n).decode() for n in z.namelist() if n.endswith(".xml"))
    return body.decode("utf-8-sig")


async def _dead_ticket(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator,
                       receiver: Receiver) -> int:
    """One ticket of PERSON whose push the receiver refused for good (a dead letter)."""
    return await dead_letter(hub, http, website, receiver, PERSON)


async def test_no_token_or_an_unknown_one_is_401_and_roles_are_enforced(
        admin_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    push_id = await _dead_ticket(admin_hub, http, website, receiver)
    status, body, r = await _get(http, admin_hub, "/api/v1/tickets", role=None)
    assert (status, body["error"]) == (401, "unauthorized") and r.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(f"http://127.0.0.1:{admin_hub.port}/api/v1/tickets",
                        headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    async with http.get(f"http://127.0.0.1:{admin_hub.port}/api/v1/tickets",
                        headers={"Authorization": "Basic dmlld2VyOng="}) as r:
        assert r.status == 401
    # A viewer reads but may not act; an operator may act but not read the audit log.
    url = f"http://127.0.0.1:{admin_hub.port}/api/v1/dead-letters/{push_id}/retry"
    async with http.post(url, headers=_auth("viewer")) as r:
        assert r.status == 403 and "needs operator" in (await r.json())["message"]
    assert (await _get(http, admin_hub, "/api/v1/audit", role="operator"))[0] == 403
    # The OpenAPI document needs no token and lists every endpoint.
    status, doc, _ = await _get(http, admin_hub, "/api/v1/openapi.json", role=None)
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert {"/api/v1/tickets", "/api/v1/tickets/{id}", "/api/v1/dead-letters/{id}/retry",
            "/api/v1/audit"} <= set(doc["paths"])


async def test_a_dead_letter_is_retried_through_the_api_delivered_and_audited(
        admin_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    push_id = await _dead_ticket(admin_hub, http, website, receiver)
    status, body, _ = await _get(http, admin_hub, "/api/v1/dead-letters")
    assert status == 200 and [d["id"] for d in body["dead_letters"]] == [push_id]
    _, health, _ = await _get(http, admin_hub, "/api/v1/status")
    assert health["destinations"]["hook"]["dead"] == 1 and health["inbox"]["done"] == 1
    assert [s["id"] for s in health["sources"]] == ["site"] and health["ready"] is True
    assert "13912345678" not in str(body)  # the destination's answer quoted the phone: masked
    async with http.post(f"http://127.0.0.1:{admin_hub.port}/api/v1/dead-letters/{push_id}/retry",
                         headers=_auth("operator")) as r:
        assert (r.status, await r.json()) == (200, {"retried": push_id})

    async def delivered() -> bool:
        return (await _get(http, admin_hub, "/api/v1/outbox?state=delivered"))[1]["pushes"] != []

    await wait_until(delivered, timeout=10)
    assert list(receiver.seen.values()) == [1]  # the retried push, once (the scripted refusal is not counted)
    # Retrying it again: it is no longer dead.
    async with http.post(f"http://127.0.0.1:{admin_hub.port}/api/v1/dead-letters/{push_id}/retry",
                         headers=_auth("operator")) as r:
        assert r.status == 404
    status, body, _ = await _get(http, admin_hub, "/api/v1/audit", role="admin")
    (entry,) = body["audit"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("api:bob", "dlq.retry", f"outbox:{push_id}")
    assert entry["detail"]["before"]["state"] == "dead" and entry["detail"]["after"]["state"] == "pending"


def _filled(path: str, ids: dict[str, int]) -> str:
    return re.sub(r"\{id\}", str(ids["customers" if path.startswith("/api/v1/customers") else "tickets"]), path)


async def test_a_token_without_pii_never_receives_a_phone_address_email_or_name(
        admin_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    await _dead_ticket(admin_hub, http, website, receiver)
    status, body, _ = await _get(http, admin_hub, "/api/v1/tickets")
    (ticket,) = body["tickets"]
    ids = {"tickets": ticket["id"], "customers": ticket["customer_id"]}
    _, doc, _ = await _get(http, admin_hub, "/api/v1/openapi.json", role=None)
    secrets = (PERSON.phone, PERSON.phone[-8:], "文三路", PERSON.email, PERSON.name)
    walked = []
    for path, ops in doc["paths"].items():
        if "get" not in ops:
            continue
        status, body, _ = await _get(http, admin_hub, _filled(path, ids))
        assert status in (200, 403), (path, status, body)
        text = str(body)
        assert not [s for s in secrets if s in text], (path, text)
        walked.append(path)
    assert len(walked) >= 7
    # With the grant the same customer shows in clear.
    status, body, _ = await _get(http, admin_hub, f"/api/v1/customers/{ids['customers']}", role="admin")
    assert body["customer"]["phone"] == PERSON.phone and "文三路" in body["customer"]["address"]
    status, body, _ = await _get(http, admin_hub, f"/api/v1/customers/{ids['customers']}")
    assert body["customer"]["phone"] != PERSON.phone and body["customer"]["phone"].endswith("5678")


async def test_filters_pages_and_bad_parameters(
        admin_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    for _ in range(5):
        body, headers = website.sign(website.request())
        async with http.post(f"http://127.0.0.1:{admin_hub.port}/webhooks/site", data=body, headers=headers) as r:
            assert r.status == 200
    await receiver.wait_for(5, timeout=10)
    _, first, _ = await _get(http, admin_hub, "/api/v1/tickets?limit=3")
    ids = [t["id"] for t in first["tickets"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    _, rest, _ = await _get(http, admin_hub, f"/api/v1/tickets?limit=3&before={ids[-1]}")
    assert [t["id"] for t in rest["tickets"]] == sorted(set(range(1, ids[-1])), reverse=True)
    _, none, _ = await _get(http, admin_hub, "/api/v1/tickets?status=closed")
    assert none["tickets"] == []
    _, new, _ = await _get(http, admin_hub, "/api/v1/tickets?status=new&since=2000-01-01T00:00:00Z")
    assert len(new["tickets"]) == 5
    _, detail, _ = await _get(http, admin_hub, f"/api/v1/tickets/{ids[0]}")
    assert [e["kind"] for e in detail["timeline"]][0] == "created"
    assert detail["raw_events"][0]["state"] == "done" and detail["pushes"][0]["payload"] is None
    status, err, _ = await _get(http, admin_hub, "/api/v1/tickets?limit=many")
    assert (status, err["error"]) == (400, "bad_request") and "limit" in err["message"]
    status, err, _ = await _get(http, admin_hub, "/api/v1/tickets?since=2026-01-01T00:00:00")
    assert status == 400 and "time zone" in err["message"]
    assert (await _get(http, admin_hub, "/api/v1/tickets/999999"))[0] == 404
    async with http.delete(f"http://127.0.0.1:{admin_hub.port}/api/v1/tickets", headers=_auth("admin")) as r:
        assert r.status == 405


async def test_exports_stream_every_ticket_masked_without_pii(
        admin_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    await _dead_ticket(admin_hub, http, website, receiver)
    for _ in range(3):
        body, headers = website.sign(website.request())
        async with http.post(f"http://127.0.0.1:{admin_hub.port}/webhooks/site", data=body, headers=headers) as r:
            assert r.status == 200
    await receiver.wait_for(3, timeout=10)  # the first ticket's push is a dead letter
    status, text, r = await _get(http, admin_hub, "/api/v1/exports/tickets.csv")
    assert status == 200 and r.headers["Content-Disposition"].endswith('tickets.csv"')
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:4] == ["ticket", "channel", "source", "external id"] and len(table) == 1 + 4
    phone_col = table[0].index("phone")
    assert table[1][phone_col].endswith("5678") and table[1][phone_col] != PERSON.phone
    status, text, _ = await _get(http, admin_hub, "/api/v1/exports/tickets.xlsx")
    assert status == 200 and "13912345678" not in text and "ticket" in text
    # With the grant, the same export carries the number; both are audited.
    status, text, _ = await _get(http, admin_hub, "/api/v1/exports/tickets.csv?status=new", role="admin")
    assert PERSON.phone in text
    _, audit, _ = await _get(http, admin_hub, "/api/v1/audit", role="admin")
    assert [(a["action"], a["detail"]["pii"]) for a in audit["audit"]][:3] == [
        ("export.csv", True), ("export.xlsx", False), ("export.csv", False)]


async def test_dashboard_pages_never_show_a_contact_without_pii_and_both_languages_are_complete(
        admin_hub: Hub, website: WebsiteSimulator, receiver: Receiver) -> None:
    from hub.dashboard.texts import LANGUAGES, TEXTS

    assert [k for k, v in TEXTS.items() if set(v) != set(LANGUAGES)] == []
    base = f"http://127.0.0.1:{admin_hub.port}/dashboard"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _dead_ticket(admin_hub, http, website, receiver)
        async with http.get(base) as r:   # not signed in: the sign-in page, nothing else
            assert r.status == 200 and 'name="token"' in await r.text() and "dead-letters" not in await r.text()
        async with http.post(base + "/login", data={"token": "wrong"}) as r:
            assert r.status == 401
        async with http.post(base + "/login", data={"token": TOKENS["viewer"]}) as r:
            assert r.status == 200 and "Recent tickets" in await r.text()
        secrets = (PERSON.phone, PERSON.phone[-8:], "文三路", PERSON.email, PERSON.name)
        pages = [base, base + "?lang=zh", base + "?q=1", base + "/tickets/1"]
        for page in pages:
            async with http.get(page) as r:
                text = await r.text()
                assert r.status == 200 and not [s for s in secrets if s in text], page
        async with http.get(base + "/tickets/999") as r:
            assert r.status == 404
