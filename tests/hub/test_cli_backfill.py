"""``hub backfill``: asks the process polling a source to read it again from
a past time; refuses what cannot be backfilled, naming why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hub import polling, standard_webhooks
from hub.cli import app
from hub.records import audit_log
from hub.storage import Database


async def _state(url: str) -> tuple[dict[str, object], list[str]]:
    db = Database(url)
    await db.migrate()
    try:
        asked = await polling.backfills(db, "jd")
        async with db.read() as conn:
            actions = list((await conn.execute(audit_log.select())).all())
        return asked, [a.action for a in actions]
    finally:
        await db.close()


def test_backfill_is_asked_for_a_polled_source_and_refused_for_a_webhook_one(tmp_path: Path, pii_key: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_state(url))  # migrated
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"url": url}, "security": {"pii_key": pii_key},
        "sources": [{"id": "jd", "kind": "jd", "api_url": "http://127.0.0.1:9/routerjson", "app_key": "k",
                     "app_secret": "s", "access_token": "t"},
                    {"id": "site", "kind": "website", "secret": standard_webhooks.new_secret()}]}))
    runner = CliRunner()
    asked = runner.invoke(app, ["backfill", "jd", "--since", "2026-11-10T00:00:00+08:00", "-c", str(config),
                                "--no-wait"])
    assert asked.exit_code == 0, asked.output
    assert "backfill of jd (services) from 2026-11-10T00:00:00+08:00 asked for" in asked.output
    rows, actions = asyncio.run(_state(url))
    assert rows == {"services": {"since": "2026-11-09T16:00:00+00:00"}} and actions == ["source.backfill"]

    webhook = runner.invoke(app, ["backfill", "site", "--since", "2026-11-10T00:00:00Z", "-c", str(config)])
    assert webhook.exit_code == 2 and "webhook source" in webhook.output
    naive = runner.invoke(app, ["backfill", "jd", "--since", "2026-11-10 00:00", "-c", str(config)])
    assert naive.exit_code == 2 and "with a zone" in naive.output
    future = runner.invoke(app, ["backfill", "jd", "--since", "2099-01-01T00:00:00Z", "-c", str(config)])
    assert future.exit_code == 2 and "in the past" in future.output
