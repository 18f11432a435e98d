"""Durable ingest: signed website webhooks from wrk against the running daemon,
next to a bare aiohttp handler measured in the same run.

    python bench/ingest.py [--seconds 8] [--connections 64] [--storage sqlite|postgres]

Every request is a distinct, pre-signed ~1.3 KB Standard Webhooks message
(unique webhook-id, so none is a duplicate); the hub verifies it, commits it
to the inbox (group commit) and only then answers 200. The pipeline is
switched off so the figure is ingest alone. Prints requests/s, p50/p99
latency, non-2xx count, the hub's peak RSS, and the ratio to the bare handler;
then checks the database holds exactly as many raw events as were acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, free_port, wait_port  # noqa: E402
from connectors.website.simulator import WebsiteSimulator  # noqa: E402
from hub import standard_webhooks  # noqa: E402

LUA = r"""
local lines = {}
local body = nil
local counter = 0
local tid = 0
local nthreads = 1
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  nthreads = tonumber(args[1])
  local f = io.open(args[2], "r")
  body = f:read("*l")
  for line in f:lines() do table.insert(lines, line) end
  f:close()
  counter = tid
end
function request()
  local line = lines[(counter % #lines) + 1]
  counter = counter + nthreads
  local id, ts, sig = line:match("(%S+) (%S+) (%S+)")
  return wrk.format("POST", nil, {["content-type"]="application/json", ["webhook-id"]=id,
    ["webhook-timestamp"]=ts, ["webhook-signature"]=sig}, body)
end
"""


def run_wrk(url: str, script: Path, data: Path, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
                          "-s", str(script), url, "--", "1", str(data)],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": rps, "total": total, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "p50": pct("50"), "p99": pct("99"), "socket_errors": errors.group(1) if errors else ""}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--postgres-url", default=os.environ.get("HUB_TEST_POSTGRES_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/ingest.py needs wrk: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    secret = standard_webhooks.new_secret()
    sim = WebsiteSimulator(secret=secret, seed=1)
    msg = sim.request()
    msg["data"]["description"] += " 补充：" + "外箱压痕明显，内衬也有破损。" * 20  # ~1 KB, as the site sends
    body = orjson.dumps(msg)
    key = standard_webhooks.decode_secret(secret)
    # Enough distinct messages for the run at ~3x the expected rate.
    n = int(args.seconds * 60_000)
    now = int(time.time())
    data = work / "requests.txt"
    with data.open("w") as f:
        f.write(body.decode() + "\n")
        for i in range(n):
            mid = f"msg_bench_{i:08d}"
            f.write(f"{mid} {now} {standard_webhooks.sign(key, mid, now, body)}\n")
    script = work / "signed.lua"
    script.write_text(LUA)
    print(f"body {len(body)} bytes, {n} distinct pre-signed messages, wrk -t1 -c{args.connections} "
          f"-d{int(args.seconds)}s, storage {args.storage}")

    # 1. bare aiohttp handler
    port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench/bare_server.py"), str(port)])
    try:
        wait_port(port)
        base = run_wrk(f"http://127.0.0.1:{port}/webhooks/site", script, data, args.seconds,
                       args.connections)
    finally:
        bare.terminate()
        bare.wait()

    # 2. the hub, durable ingest
    with bench_database(args.storage, work, args.postgres_url) as url:
        hub_port = free_port()
        cfg = work / "config.yaml"
        cfg.write_text(yaml.safe_dump({
            "server": {"listen": f"127.0.0.1:{hub_port}"},
            "storage": {"url": url},
            "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()},
            "sources": [{"id": "site", "kind": "website", "secret": secret}],
            "pipeline": {"enabled": False},
            "logging": {"level": "warning"},
        }))
        hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(cfg)], cwd=ROOT)
        try:
            wait_port(hub_port)
            time.sleep(0.5)
            res = run_wrk(f"http://127.0.0.1:{hub_port}/webhooks/site", script, data, args.seconds,
                          args.connections)
            rss = peak_rss_mb(hub.pid)
        finally:
            hub.terminate()
            hub.wait(60)
        stored = asyncio.run(count_raw(url))

    acked = res["total"] - res["non2xx"]
    print()
    print(f"{'':28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    print(f"{'bare aiohttp handler':28}{base['rps']:>10.0f}{base['p50']:>9.2f}{base['p99']:>9.2f}{base['non2xx']:>9}")
    print(f"{'hub durable ingest':28}{res['rps']:>10.0f}{res['p50']:>9.2f}{res['p99']:>9.2f}{res['non2xx']:>9}")
    print()
    print(f"ratio hub / bare: {res['rps'] / base['rps']:.2f}   (goal: >= 0.50)")
    print(f"hub peak RSS: {rss:.0f} MB")
    print(f"acknowledged {acked}, raw events in the database {stored}"
          f" -> {'OK' if stored >= acked else 'LOST EVENTS'}")
    if res["socket_errors"]:
        print(f"socket errors: {res['socket_errors']}")
    shutil.rmtree(work, ignore_errors=True)


async def count_raw(url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar_one())
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
