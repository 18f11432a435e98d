"""``hub dlq list|retry|drop`` against a real database: what an operator runs
when a push has dead-lettered and holds its ticket's later pushes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from hub import standard_webhooks
from hub.cli import app
from hub.records import audit_log, outbox, ticket_events
from hub.storage import Database
from tests.conftest import seed_pushes


async def _seed(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await seed_pushes(db, [
        {"id": 1, "destination_id": "erp", "state": "dead", "attempts": 1, "last_status": 400,
         "last_error": "HTTP 400"},
        {"id": 2, "destination_id": "erp", "event_type": "ticket.status_changed"}], ticket_id=7)
    await db.close()


async def _state(url: str) -> tuple[list[tuple[int, str, int]], list[str], list[str]]:
    db = Database(url)
    async with db.read() as conn:
        rows = [tuple(r) for r in (await conn.execute(
            sa.select(outbox.c.id, outbox.c.state, outbox.c.attempts).order_by(outbox.c.id))).all()]
        kinds = list((await conn.execute(sa.select(ticket_events.c.kind))).scalars())
        actions = list((await conn.execute(sa.select(audit_log.c.action))).scalars())
    await db.close()
    return rows, kinds, actions  # type: ignore[return-value]


async def _redead(url: str) -> None:
    db = Database(url)
    async with db.write() as conn:
        await conn.execute(sa.update(outbox).where(outbox.c.id == 1).values(state="dead"))
    await db.close()


def test_list_retry_and_drop(tmp_path: Path, pii_key: str) -> None:
    # The CLI runs its own event loop, as it does from a shell.
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_seed(url))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"url": url}, "security": {"pii_key": pii_key},
        "destinations": [{"id": "erp", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                          "secret": standard_webhooks.new_secret()}]}))
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "dead letters (1)" in listed.output and "HTTP 400" in listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("│ 1 "))
    assert row.split("│")[-2].strip() == "1"  # it holds the status change behind it

    retried = runner.invoke(app, ["dlq", "retry", "1", "2", "-c", str(config)])
    assert retried.exit_code == 1 and "retried: 1" in retried.output  # 2 was not dead
    rows, kinds, actions = asyncio.run(_state(url))
    assert rows == [(1, "pending", 0), (2, "pending", 0)] and kinds == ["sync_retried"]

    asyncio.run(_redead(url))
    assert runner.invoke(app, ["dlq", "drop", "1", "-c", str(config)]).exit_code != 0  # a reason is required
    dropped = runner.invoke(app, ["dlq", "drop", "1", "--reason", "order was deleted in the ERP", "-c", str(config)])
    assert dropped.exit_code == 0 and "dropped: 1" in dropped.output
    rows, kinds, actions = asyncio.run(_state(url))
    assert rows[0] == (1, "dropped", 0) and kinds == ["sync_retried", "sync_dropped"]
    assert actions == ["dlq.retry", "dlq.drop"]
