"""Delivery throughput: outbox rows → signed pushes to a local receiver.

    python bench/deliver.py [--pushes 5000] [--storage sqlite|postgres]

Fills the outbox with N pending pushes (one per ticket, ~1 KB each), starts
a receiver in its own process (the bare aiohttp handler), and times the
hub's Deliverer draining the outbox: claim up to the destination's free
slots, sign, POST concurrently, record outcomes with their timeline events
as they complete. The baseline, in the same run,
is the same N POSTs from one aiohttp client session with no database at all.
Beside the rates, each side's CPU a push (its process, every thread): the
receiver shares the two cores, so a rate moves with the box, and the CPU
a push is the steadier figure when comparing code.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, free_port, storage_arguments, wait_port  # noqa: E402
from connectors.webhook.destination import WebhookDestination, WebhookDestinationConfig  # noqa: E402
from hub import standard_webhooks  # noqa: E402
from hub.config import RetryConfig  # noqa: E402
from hub.delivery import ActiveDestination, Deliverer  # noqa: E402
from hub.records import outbox, tickets, utcnow  # noqa: E402
from hub.retry import RetryPolicy  # noqa: E402
from hub.storage import Database  # noqa: E402
from hub.supervisor import wait_at_most  # noqa: E402

CONCURRENCY = 64


async def fill(db: Database, n: int, payload: str) -> None:
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(sa.insert(tickets), [
            {"id": i, "channel": "website", "source_id": "site", "external_id": f"AS{i}",
             "type": "refund_only", "status": "new", "priority": "normal",
             "created_at": now, "updated_at": now} for i in range(1, n + 1)])
        await conn.execute(sa.insert(outbox), [
            {"destination_id": "erp", "ticket_id": i, "ordering_key": f"erp:{i}",
             "event_type": "ticket.created", "idempotency_key": f"msg_erp_{i}_1", "payload": payload,
             "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
            for i in range(1, n + 1)])


async def run_hub(url: str, n: int, payload: str, target: str) -> tuple[float, float]:
    db = Database(url)
    await db.migrate()
    await fill(db, n, payload)
    cfg = WebhookDestinationConfig(id="erp", kind="webhook", url=target,
                                   secret=standard_webhooks.new_secret())  # type: ignore[arg-type]
    active = {"erp": ActiveDestination(WebhookDestination(cfg), RetryPolicy(RetryConfig()),
                                       limit=CONCURRENCY, timeout=cfg.timeout)}
    done = 0

    def count(_dest: str, result: str, _seconds: float) -> None:
        nonlocal done
        done += result == "delivered"

    deliverer = Deliverer(db, active, batch=256, on_result=count)
    await deliverer.start()

    # As the daemon runs them: one loop claims (and starts attempts), one records.
    async def loop(step: Any, wake: asyncio.Event) -> None:
        while done < n or deliverer._outcomes:
            wake.clear()
            if not await step():
                await wait_at_most(wake, 0.05)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(loop(deliverer.claim_once, deliverer.wake),
                         loop(deliverer.record_once, deliverer.completed))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await deliverer.close()
    async with db.read() as conn:
        delivered = (await conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                        .where(outbox.c.state == "delivered"))).scalar_one()
    await db.close()
    if delivered != n:
        raise SystemExit(f"only {delivered} of {n} delivered")
    return elapsed, cpu


async def run_baseline(n: int, payload: str, target: str) -> tuple[float, float]:
    sem = asyncio.Semaphore(CONCURRENCY)
    body = payload.encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one() -> None:
            async with sem, http.post(target, data=body) as resp:
                await resp.read()
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushes", type=int, default=5000)
    storage_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-deliver-"))
    payload = orjson.dumps({"type": "ticket.created", "data": {"ticket": {"description": "x" * 900}}}).decode()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(ROOT / "bench/bare_server.py"), str(port)])
    target = f"http://127.0.0.1:{port}/hook"
    try:
        wait_port(port)
        base, base_cpu = asyncio.run(run_baseline(args.pushes, payload, target))
        with bench_database(args.storage, work, args.postgres_url) as url:
            hub, hub_cpu = asyncio.run(run_hub(url, args.pushes, payload, target))
    finally:
        receiver.terminate()
        receiver.wait()
    print(f"{args.pushes} pushes of {len(payload)} bytes, concurrency {CONCURRENCY}, storage {args.storage}")
    per = 1e6 / args.pushes
    print(f"{'bare aiohttp client (no DB)':34}{args.pushes / base:>9.0f} POSTs/s       "
          f"{base_cpu * per:5.0f} µs of CPU a POST")
    print(f"{'hub outbox -> signed push':34}{args.pushes / hub:>9.0f} deliveries/s  "
          f"{hub_cpu * per:5.0f} µs of CPU a push (goal on SQLite: >= 3000/s)")
    print(f"ratio hub / bare client: {base / hub:.2f}   CPU a push, hub / bare client: {hub_cpu / base_cpu:.2f}")


if __name__ == "__main__":
    main()
