"""Polling throughput: refunds ingested per second from each platform simulator,
and how close the hub's calls come to the platform's configured quota.

    python bench/poll.py [--taobao-records 3000 --taobao-quota 2]
                         [--jd-records 300 --jd-quota 20] [--storage sqlite|postgres]

Each simulator holds after-sales records modified over the last two hours and
allows a number of calls per second (a token bucket, like the platform's
gateway). The hub, configured with the same quota, polls from an
empty cursor until every record is stored as a raw event, with the pipeline
running beside it as in production. Printed per platform:

- records ingested per second (stored in the inbox) and the time until every
  record had become a ticket;
- platform calls per second, as a share of the quota (the goal: close to 1.0,
  never above — the simulator counts every call it had to refuse);
- the ceiling the quota allows for that platform's call pattern: Taobao reads
  a page of up to 100 refunds per call; JD reads a page, then one detail and
  one order call per service.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, storage_arguments  # noqa: E402
from connectors.jd.simulator import JdSimulator  # noqa: E402
from connectors.simserver import PlatformQuota, SimServer  # noqa: E402
from connectors.taobao.simulator import TaobaoSimulator  # noqa: E402
from hub import logs  # noqa: E402
from hub.config import parse_config  # noqa: E402
from hub.daemon import Hub  # noqa: E402
from hub.records import raw_events, tickets, utcnow  # noqa: E402
from hub.registry import Registry  # noqa: E402
from hub.yamlfile import YamlDoc  # noqa: E402


def source_for(kind: str, sim: Any, quota: float) -> dict[str, Any]:
    common = {"poll_every": "1s", "lag": "1s", "initial_lookback": "3h",
              "quota": {"calls_per_second": quota, "burst": max(1, int(quota))}}
    if kind == "taobao":
        return common | {"id": "tb", "kind": "taobao", "api_url": sim.url, "app_key": sim.app_key,
                         "app_secret": sim.app_secret, "session": sim.session, "mode": ["poll"],
                         "fetch_orders": False, "page_size": 100}
    return common | {"id": "jd", "kind": "jd", "api_url": sim.url, "app_key": sim.app_key,
                     "app_secret": sim.app_secret, "access_token": sim.access_token, "page_size": 50}


async def run_one(kind: str, records: int, quota: float, db_url: str) -> dict[str, float]:
    sim: SimServer
    # The platform allows `quota` calls/s; a burst of one second's worth.
    platform_quota = PlatformQuota(calls_per_second=quota, burst=max(1, int(quota)))
    sim = TaobaoSimulator(quota=platform_quota) if kind == "taobao" else JdSimulator(quota=platform_quota)
    now = utcnow()
    sim.populate(records, now - timedelta(hours=2), now - timedelta(seconds=30))  # type: ignore[attr-defined]
    await sim.start()
    registry = Registry.discover()
    cfg = parse_config(YamlDoc({
        "server": {"listen": "127.0.0.1:0"}, "storage": {"url": db_url},
        "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()},
        "sources": [source_for(kind, sim, quota)], "pipeline": {"tick": "100ms"},
        "logging": {"level": "error"}}, "(bench)"), registry)
    hub = Hub(cfg, registry)
    started = time.perf_counter()
    await hub.start(serve=False)
    ingested_at = done_at = None
    try:
        while done_at is None:
            await asyncio.sleep(0.05)
            async with hub.db.read() as conn:
                stored = (await conn.execute(sa.select(sa.func.count()).select_from(raw_events))).scalar_one()
                made = (await conn.execute(sa.select(sa.func.count()).select_from(tickets))).scalar_one()
            if ingested_at is None and stored >= records:
                ingested_at = time.perf_counter() - started
                calls = sum(sim.calls.values())  # type: ignore[attr-defined]
            if made >= records:
                done_at = time.perf_counter() - started
    finally:
        await hub.stop()
        await sim.stop()
    assert ingested_at is not None and done_at is not None
    per_record = 1 / 100 if kind == "taobao" else 2 + 1 / 50
    return {"ingest_rate": records / ingested_at, "ingest_s": ingested_at, "tickets_s": done_at,
            "calls": calls, "call_rate": calls / ingested_at, "quota": quota,
            "ceiling": quota / per_record, "refused": platform_quota.refused}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--taobao-records", type=int, default=3000)
    parser.add_argument("--taobao-quota", type=float, default=2.0, help="Taobao calls per second")
    parser.add_argument("--jd-records", type=int, default=300)
    parser.add_argument("--jd-quota", type=float, default=20.0, help="JD calls per second")
    storage_arguments(parser)
    args = parser.parse_args()
    logs.configure("error", "console")
    print(f"polling from empty cursors, {args.storage}")
    print(f"{'platform':<8} {'records':>8} {'quota':>7} {'records/s':>10} {'ceiling/s':>10} {'calls/s':>8} "
          f"{'of quota':>9} {'refused':>8} {'ingested':>9} {'tickets':>8}")
    for kind, records, quota in (("taobao", args.taobao_records, args.taobao_quota),
                                 ("jd", args.jd_records, args.jd_quota)):
        with tempfile.TemporaryDirectory() as tmp, bench_database(args.storage, Path(tmp), args.postgres_url) as url:
            r = await run_one(kind, records, quota, url)
        print(f"{kind:<8} {records:>8} {quota:>6g}/s {r['ingest_rate']:>10.0f} {r['ceiling']:>10.0f} "
              f"{r['call_rate']:>8.1f} {r['call_rate'] / r['quota']:>8.0%} {r['refused']:>8.0f} "
              f"{r['ingest_s']:>8.1f}s {r['tickets_s']:>7.1f}s")


if __name__ == "__main__":
    asyncio.run(main())
