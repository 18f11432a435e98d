"""Durable ingest: signed website webhooks from wrk against the running daemon,
next to two baselines measured in the same run: a bare aiohttp handler (the
ceiling) and bench/minimal_server.py (the floor of the work: verify, parse,
seal, group commit — and nothing else).

    python bench/ingest.py [--seconds 8] [--connections 64] [--storage sqlite|postgres] [--ingest-only]

Every request is a distinct, pre-signed ~1.3 KB Standard Webhooks message
(unique webhook-id, so none is a duplicate); the hub verifies it, commits it
to the inbox (group commit) and only then answers 200. The hub runs as
operators run it — the shipped defaults, processing and delivery on (every
request becomes a ticket and a push to bench/push_receiver.py), as many
processes as ``supervisor.processes: auto`` gives — so intake is measured
while the pipeline works behind it; ``--ingest-only`` switches processing
off to measure intake alone. Prints requests/s, p50/p99 latency, non-2xx
count and CPU per request of each server (all of the hub's processes), the
ratios, the hub's peak RSS, CPU by process and group-commit size; then checks
the database holds at least as many raw events as were acknowledged.

``--set storage.batch_delay=0.002`` overrides the hub's config; ``--profile
out.svg|out.txt|out.perf`` records the hub under load (py-spy flame graph,
py-spy raw stacks, or perf).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_database,
    cpu_by_role,
    free_port,
    process_tree,
    status_mb,
    storage_arguments,
    wait_port,
)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, its threads and its children now running."""
    total = 0.0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_wrk(url: str, script: Path, data: Path, seconds: float, connections: int,
            server_pid: int) -> dict[str, float]:
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
                          "-s", str(script), url, "--", "1", str(data)],
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server_pid) - cpu_before
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
            "p50": pct("50"), "p99": pct("99"), "socket_errors": errors.group(1) if errors else "",
            "cpu_us": cpu / total * 1e6 if total else float("nan")}


def process_cpu(pid: int) -> str:
    """CPU seconds of each of the hub's processes, with its roles."""
    return ", ".join(f"{role} {spent:.1f} s" for role, spent in cpu_by_role(process_tree(pid)).items())


def peak_rss_mb(pid: int) -> float:
    """The peak RSS of each of the hub's processes, summed."""
    return status_mb(process_tree(pid))


def write_requests(path: Path, body: bytes, key: bytes, prefix: str, n: int) -> None:
    now = int(time.time())
    with path.open("w") as f:
        f.write(body.decode() + "\n")
        for i in range(n):
            mid = f"msg_{prefix}_{i:08d}"
            f.write(f"{mid} {now} {standard_webhooks.sign(key, mid, now, body)}\n")


def hub_config(args: argparse.Namespace, port: int, url: str, secret: str, push_port: int,
               push_secret: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "storage": {"url": url},
        "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()},
        "sources": [{"id": "site", "kind": "website", "secret": secret}],
        "destinations": [{"id": "erp", "kind": "webhook", "url": f"http://127.0.0.1:{push_port}/hook",
                          "secret": push_secret}],
        "sync": [{"on": ["ticket.created"], "to": "erp"}],
        "logging": {"level": "warning"},
    }
    if args.ingest_only:
        config["pipeline"] = {"enabled": False}
    for item in args.set:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return config


def start_profiler(target: str, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    if target.endswith(".perf"):
        return subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", target,
                                 "-p", str(pid), "--", "sleep", str(int(seconds))], stderr=subprocess.DEVNULL)
    return subprocess.Popen(["py-spy", "record", "-o", target, "-p", str(pid), "-d", str(int(seconds)),
                             "-r", "250", "--nonblocking",
                             "-f", "raw" if target.endswith(".txt") else "flamegraph"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5, help="length of each wrk run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="each round runs wrk against all three servers in turn; medians are reported")
    ap.add_argument("--connections", type=int, default=64)
    storage_arguments(ap)
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a config value of the hub under test, e.g. storage.batch_delay=0")
    ap.add_argument("--profile", metavar="FILE", help="record the hub's first run: .svg, .txt (py-spy) or .perf")
    ap.add_argument("--ingest-only", action="store_true",
                    help="pipeline.enabled: false (intake alone; no operator runs this)")
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
    # Distinct messages for each round (a resent id would be a cheaper duplicate),
    # enough for ~3x the expected rate.
    n = int(args.seconds * 40_000)
    data = [work / f"requests-{r}.txt" for r in range(args.rounds)]
    for r, path in enumerate(data):
        write_requests(path, body, key, f"r{r}", n)
    script = work / "signed.lua"
    script.write_text(LUA)
    print(f"body {len(body)} bytes, wrk -t1 -c{args.connections} -d{int(args.seconds)}s, "
          f"{args.rounds} rounds of bare / minimal / hub, storage {args.storage}, hub "
          + ("ingest only (processing off)" if args.ingest_only else
             "with processing and delivery on (shipped defaults)"))

    names = ("bare aiohttp handler", "minimal durable handler", "hub durable ingest")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    servers: list[subprocess.Popen[bytes]] = []
    with bench_database(args.storage, work, args.postgres_url) as url:
        ports = [free_port() for _ in names]
        push_port, push_secret = free_port(), standard_webhooks.new_secret()
        cfg = work / "config.yaml"
        cfg.write_text(yaml.safe_dump(hub_config(args, ports[2], url, secret, push_port, push_secret)))
        receiver = subprocess.Popen([sys.executable, str(ROOT / "bench/push_receiver.py"), str(push_port),
                                     push_secret], env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            servers = [
                subprocess.Popen([sys.executable, str(ROOT / "bench/bare_server.py"), str(ports[0])]),
                subprocess.Popen([sys.executable, str(ROOT / "bench/minimal_server.py"), str(ports[1]),
                                  secret, str(work / "minimal.db")]),
                subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(cfg)], cwd=ROOT),
            ]
            for port in ports:
                wait_port(port)
            time.sleep(0.5)
            hub = servers[2]
            for r in range(args.rounds):
                for name, port, server in zip(names, ports, servers, strict=True):
                    spy = (start_profiler(args.profile, hub.pid, args.seconds)
                           if args.profile and server is hub and r == 0 else None)
                    runs[name].append(run_wrk(f"http://127.0.0.1:{port}/webhooks/site", script, data[r],
                                              args.seconds, args.connections, server.pid))
                    if spy is not None:
                        spy.wait()
            rss = peak_rss_mb(hub.pid)
            commits = commit_stats(ports[2])
            threads = process_cpu(hub.pid)
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(120)
            receiver.terminate()
            receiver.wait(10)
        stored = asyncio.run(count_raw(url))

    print()
    print(f"{'median of ' + str(args.rounds) + ' runs':28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'non-2xx':>9}{'CPU us/req':>12}")
    for name in names:
        med = {k: statistics.median(run[k] for run in runs[name])
               for k in ("rps", "p50", "p99", "non2xx", "cpu_us")}
        print(f"{name:28}{med['rps']:>10.0f}{med['p50']:>9.2f}{med['p99']:>9.2f}{med['non2xx']:>9.0f}"
              f"{med['cpu_us']:>12.0f}")
    print()

    def ratio(a: str, b: str) -> str:
        per_round = [x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b], strict=True)]
        return f"{statistics.median(per_round):.2f}   (rounds: {', '.join(f'{v:.2f}' for v in per_round)})"

    print(f"ratio hub / bare:     {ratio(names[2], names[0])}   goal >= 0.25 with processing on")
    print(f"ratio minimal / bare: {ratio(names[1], names[0])}   what verify + parse + seal + fsync'd "
          "group commit leave")
    print(f"ratio hub / minimal:  {ratio(names[2], names[1])}   the hub's own cost")
    print(f"hub peak RSS (all processes): {rss:.0f} MB; CPU since start: {threads}")
    print(f"group commits: {commits}")
    acked = sum(run["total"] - run["non2xx"] for run in runs[names[2]])
    print(f"hub acknowledged {acked:.0f}, raw events in its database {stored}"
          f" -> {'OK' if stored >= acked else 'LOST EVENTS'}")
    for name in names:
        errors = {run["socket_errors"] for run in runs[name] if run["socket_errors"]}
        if errors:
            print(f"{name} socket errors: {'; '.join(map(str, errors))}")
    shutil.rmtree(work, ignore_errors=True)


def commit_stats(port: int) -> str:
    """Mean rows and time per inbox transaction, from the hub's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{name} ([\d.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    n = value("hub_inbox_commit_rows_count")
    if not n:
        return "none"
    slow = n - value('hub_inbox_commit_seconds_bucket{le="0.05"}')
    return (f"{n:.0f} transactions, {value('hub_inbox_commit_rows_sum') / n:.1f} rows and "
            f"{value('hub_inbox_commit_seconds_sum') / n * 1000:.2f} ms each; {slow:.0f} took over 50 ms")


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
