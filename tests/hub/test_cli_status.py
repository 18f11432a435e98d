"""``hub status`` and ``hub tickets show`` against a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hub import standard_webhooks
from hub.cli import app
from hub.storage import Database
from tests.conftest import seed_pushes


async def _seed(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await seed_pushes(db, [
        {"id": 1, "destination_id": "erp", "state": "dead", "attempts": 3, "last_status": 400,
         "last_error": "HTTP 400"},
        {"id": 2, "destination_id": "erp", "event_type": "ticket.status_changed"},
        {"id": 3, "destination_id": "erp", "event_type": "ticket.updated"}], ticket_id=7)
    await db.close()


def _config(tmp_path: Path, pii_key: str) -> tuple[str, Path]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"url": url}, "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": standard_webhooks.new_secret()},
                    {"id": "tb", "kind": "taobao", "app_key": "k", "app_secret": "s", "session": "x",
                     "enabled": False}],
        "destinations": [{"id": "erp", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                          "secret": standard_webhooks.new_secret()}]}))
    return url, config


def test_status_shows_sources_inbox_and_what_waits_per_destination(tmp_path: Path, pii_key: str) -> None:
    url, config = _config(tmp_path, pii_key)
    asyncio.run(_seed(url))
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "site │ website │ yes │ webhook" in text
    assert "tb │ taobao │ no │ never polled" in text
    assert "inbox: 0 pending, 0 quarantined, 0 done" in text
    assert "erp │ 2 │ 1 │ 2" in text  # two pending, both held behind the dead one


def test_tickets_show_prints_the_ticket_its_timeline_and_pushes(tmp_path: Path, pii_key: str) -> None:
    url, config = _config(tmp_path, pii_key)
    asyncio.run(_seed(url))
    runner = CliRunner()
    result = runner.invoke(app, ["tickets", "show", "7", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "ticket 7 website/site AS7" in result.output and "HTTP 400" in result.output
    missing = runner.invoke(app, ["tickets", "show", "8", "-c", str(config)])
    assert missing.exit_code == 1


def test_export_writes_csv_and_xlsx_and_refuses_other_files(tmp_path: Path, pii_key: str) -> None:
    import csv
    import zipfile

    url, config = _config(tmp_path, pii_key)
    asyncio.run(_seed(url))
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "t.csv"), "-c", str(config), "--status", "new"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "t.csv").open(encoding="utf-8-sig")))
    assert rows[0][0] == "ticket" and [r[0] for r in rows[1:]] == ["7"]
    result = runner.invoke(app, ["export", str(tmp_path / "t.xlsx"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "t.xlsx") as z:
        assert "AS7" in z.read("xl/worksheets/sheet1.xml").decode()
    assert runner.invoke(app, ["export", str(tmp_path / "t.json"), "-c", str(config)]).exit_code == 2
    assert runner.invoke(app, ["export", str(tmp_path / "t.csv"), "-c", str(config),
                               "--since", "2026-01-01"]).exit_code == 2  # no zone
