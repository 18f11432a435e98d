"""The dashboard as a person sees it: Debian's chromium, headless, driven by
Playwright. Signs in with a token, sees every source's health (a webhook
source and a polled one), retries a dead letter with one click and sees it
delivered; the same page in Chinese; a viewer sees no retry button and is
refused one; no page shows the customer's phone or address to a token
without ``pii``. Screenshots go to ``test-artifacts/dashboard/``.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs
it). Without it the test is skipped locally, and fails where
``HUB_REQUIRE_BROWSER=1`` (CI) says a browser must be there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.jd.simulator import JdSimulator
from connectors.webhook.receiver import Receiver
from connectors.website.simulator import Customer, WebsiteSimulator
from hub import backlog, samples
from hub.daemon import Hub
from hub.records import outbox, utcnow
from hub.registry import Registry
from tests.conftest import dead_letter, make_config, running, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
TOKENS = {"viewer": "view-token-0123456789", "operator": "ops-token-0123456789"}
PERSON = Customer("u7781", "司马相如", "13987654321", "xr@example.com", "成都市锦江区春熙路 12 号 5 楼")

if CHROMIUM is None:
    if os.environ.get("HUB_REQUIRE_BROWSER") == "1":
        raise RuntimeError("HUB_REQUIRE_BROWSER=1 but no chromium: apt-get install chromium")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def jd() -> AsyncIterator[JdSimulator]:
    s = JdSimulator(seed=9)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def dash_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str, receiver: Receiver,
                   jd: JdSimulator) -> AsyncIterator[Hub]:
    cfg = make_config(
        registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
        sources=[{"id": "site", "kind": "website", "secret": site_secret},
                 {"id": "jd", "kind": "jd", "api_url": jd.url, "app_key": jd.app_key, "app_secret": jd.app_secret,
                  "access_token": jd.access_token, "poll_every": "300ms", "lag": "1s", "initial_lookback": "1h"}],
        security={"pii_key": pii_key, "tokens": [
            {"name": "ann", "token": TOKENS["viewer"], "role": "viewer"},
            {"name": "bob", "token": TOKENS["operator"], "role": "operator"}]})
    async with running(cfg, registry) as h:
        yield h


async def _dead_letter(hub: Hub, website: WebsiteSimulator, receiver: Receiver) -> int:
    async with aiohttp.ClientSession() as http:
        return await dead_letter(hub, http, website, receiver, PERSON)


async def _sampled(hub: Hub) -> None:
    """Three minutes of backlog samples, as the gauges task would have taken them."""
    b = await backlog.count(hub.db, ["hook"])
    now = utcnow()
    for minutes in (3, 2, 1):
        await samples.record(hub.db, b, now - timedelta(minutes=minutes))


async def _sign_in(page: Page, hub: Hub, role: str, lang: str = "en") -> None:
    await page.goto(f"http://127.0.0.1:{hub.port}/dashboard?lang={lang}")
    await page.fill("input[name=token]", TOKENS[role])
    await page.click("button[type=submit]")


def _shot(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / name)


async def test_sign_in_see_health_retry_a_dead_letter_in_english_and_chinese(
        dash_hub: Hub, browser: Browser, website: WebsiteSimulator, receiver: Receiver, jd: JdSimulator) -> None:
    push_id = await _dead_letter(dash_hub, website, receiver)
    await _sampled(dash_hub)
    await wait_until(lambda: dash_hub.pollers["jd"].health.last_success_at is not None, timeout=10)
    page = await browser.new_page(viewport={"width": 1280, "height": 1400})

    # Without signing in: the sign-in page, and a wrong token is refused.
    await page.goto(f"http://127.0.0.1:{dash_hub.port}/dashboard?lang=en")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.fill("input[name=token]", "not-a-token")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("That token is not one of ours.")

    await _sign_in(page, dash_hub, "operator")
    await expect(page.locator("#health")).to_contain_text("Ready")
    for source in ("site", "jd"):
        tile = page.locator(f"[data-source={source}]")
        await expect(tile).to_contain_text("healthy")
    await expect(page.locator("[data-source=jd]")).to_contain_text("polled")
    await expect(page.locator("[data-destination=hook]")).to_contain_text("dead 1")
    await expect(page.locator("#charts svg")).to_have_count(2)
    await expect(page.locator("meta[http-equiv=refresh]")).to_have_attribute("content", "30")  # reloads itself
    row = page.locator(f"[data-dead='{push_id}']")
    await expect(row).to_be_visible()
    await page.screenshot(path=_shot("overview-en.png"), full_page=True)

    await row.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("status")).to_have_text(f"Push {push_id} goes out again.")
    await receiver.wait_for(1, timeout=10)

    async def delivered() -> bool:
        async with dash_hub.db.read() as conn:
            return (await conn.execute(sa.select(outbox.c.state).where(outbox.c.id == push_id))).scalar() \
                == "delivered"

    await wait_until(delivered, timeout=10)
    await page.goto(f"http://127.0.0.1:{dash_hub.port}/dashboard")
    await expect(page.locator("#dead-letters")).to_contain_text("None.")
    await expect(page.locator("[data-destination=hook]")).to_contain_text("dead 0")
    await page.screenshot(path=_shot("after-retry-en.png"), full_page=True)

    # The same page in Chinese, remembered once chosen.
    await page.goto(f"http://127.0.0.1:{dash_hub.port}/dashboard?lang=zh")
    await expect(page.get_by_role("heading", name="售后渠道中台")).to_be_visible()
    await expect(page.locator("[data-source=jd]")).to_contain_text("正常")
    await page.goto(f"http://127.0.0.1:{dash_hub.port}/dashboard")
    await expect(page.locator("#dead-letters")).to_contain_text("死信推送")
    await page.screenshot(path=_shot("overview-zh.png"), full_page=True)

    # The ticket's page: its timeline and its push, delivered now; the phone masked (no pii grant).
    await page.locator("#tickets a").first.click()
    await expect(page.locator("main")).to_contain_text("delivered")
    text = await page.locator("body").inner_text()
    assert PERSON.phone not in text and "春熙路" not in text and PERSON.phone[-4:] in text
    await page.screenshot(path=_shot("ticket-zh.png"), full_page=True)


async def test_a_viewer_sees_no_retry_and_is_refused_one(
        dash_hub: Hub, browser: Browser, website: WebsiteSimulator, receiver: Receiver) -> None:
    push_id = await _dead_letter(dash_hub, website, receiver)
    page = await browser.new_page()
    await _sign_in(page, dash_hub, "viewer")
    await expect(page.locator(f"[data-dead='{push_id}']")).to_be_visible()
    await expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    await expect(page.locator("#dead-letters")).to_contain_text("Your role may look, not act.")
    # Posting the form anyway with the session's cookie and CSRF token is still refused;
    # without the session's CSRF token it is refused whoever sends it.
    csrf = await page.locator("input[name=csrf]").first.input_value()
    url = f"http://127.0.0.1:{dash_hub.port}/dashboard/dead-letters/{push_id}/retry"
    r = await page.request.post(url, form={"csrf": csrf}, max_redirects=0)
    assert r.status == 403 and "needs operator" in await r.text()
    r = await page.request.post(url, form={"csrf": "x"}, max_redirects=0)
    assert r.status == 403 and "stale" in await r.text()
    async with dash_hub.db.read() as conn:
        assert (await conn.execute(sa.select(outbox.c.state).where(outbox.c.id == push_id))).scalar() == "dead"
    await page.screenshot(path=_shot("viewer-en.png"), full_page=True)
