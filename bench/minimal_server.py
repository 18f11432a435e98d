"""The floor: the least any durable ingest must do per request, and nothing else.

Run as ``python bench/minimal_server.py PORT SECRET DB_PATH``; bench/ingest.py
measures it between the bare handler and the hub, in the same run.

Per request it does what the hub's website source cannot skip: verify the
Standard Webhooks signature, parse the JSON (a broken body must get its 400),
seal the body with AES-GCM (bodies carry phones and addresses), and await a
group commit (one writer thread, BEGIN IMMEDIATE / one INSERT / COMMIT on
SQLite WAL with synchronous=FULL). No routing table, no config, no mapping, no
metrics, no dedupe report. The gap between this and the bare handler is the
price of the work; the gap between this and the hub is the hub's own cost.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub import standard_webhooks  # noqa: E402
from hub.pii import PiiCipher  # noqa: E402

_Row = tuple[str, str, str]


class Writer:
    def __init__(self, path: str):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, dedupe_key TEXT UNIQUE, "
                        "headers TEXT, body TEXT)")
        self.thread = ThreadPoolExecutor(1)
        self.pending: list[tuple[_Row, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()

    def _insert(self, rows: list[_Row]) -> None:
        values = ", ".join(["(?, ?, ?)"] * len(rows))
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(f"INSERT INTO raw (dedupe_key, headers, body) VALUES {values} ON CONFLICT DO NOTHING",
                        [v for row in rows for v in row])
        self.db.execute("COMMIT")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            batch, self.pending = self.pending, []
            await loop.run_in_executor(self.thread, self._insert, [row for row, _ in batch])
            for _, fut in batch:
                fut.set_result(None)

    async def store(self, row: _Row) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((row, fut))
        self.wake.set()
        await fut


def main() -> None:
    port, secret, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    keys = [standard_webhooks.decode_secret(secret)]
    cipher = PiiCipher(os.urandom(32))
    writer = Writer(path)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = standard_webhooks.verify(keys, request.headers, body)
            orjson.loads(body)
        except Exception as err:  # noqa: BLE001 - a refusal, as the hub would give
            return web.Response(status=400, text=str(err))
        await writer.store((msg_id, request.headers["webhook-timestamp"], cipher.seal_body(body)))
        return web.Response(body=b'{"status":"accepted"}', content_type="application/json")

    async def start(app: web.Application) -> None:
        app["writer"] = asyncio.create_task(writer.run())

    app = web.Application(client_max_size=1 << 20)
    app.on_startup.append(start)
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
