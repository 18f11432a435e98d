"""End to end as operators run it: signed website requests in, verified pushes out.

    python bench/e2e.py [--requests 3000] [--concurrency 32] [--rate R]
                        [--hang-fraction 0.01] [--storage sqlite|postgres] [--processes 1,2]

Starts ``hub run`` with the shipped defaults (pipeline and delivery on, one
signed webhook destination) and bench/push_receiver.py, each in a process of
its own, sends N distinct signed after-sales requests (at a concurrency, or
at a sustained offered ``--rate`` per second) and waits until every ticket's
push has been answered. Prints the ingest rate, end-to-end tickets/s (first
request sent → last push answered) and acknowledgement → push latency
p50/p99.

It runs twice in one invocation: every push answered at once (the baseline),
then ``--hang-fraction`` of the pushes hanging on their first attempt past
the destination's timeout (10 s). The other tickets' latency is printed
beside the baseline's — one slow push must not hold them up — and the hung
ones apart (they arrive after the timeout and a retry's backoff).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_database,
    free_port,
    setting_arguments,
    storage_arguments,
    wait_port,
    with_settings,
)
from connectors.website.simulator import WebsiteSimulator  # noqa: E402
from hub import standard_webhooks  # noqa: E402
from hub.config import DestinationConfig  # noqa: E402

HANG_SECONDS = DestinationConfig(id="x", kind="webhook").timeout + 20


@dataclass
class Run:
    label: str
    sent: int
    ingest_seconds: float
    end_to_end_seconds: float
    latencies: list[float]          # ack → push answered, tickets whose push did not hang
    hung_latencies: list[float]     # the same, for tickets whose first attempt hung
    refused: int


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _send_all(url: str, site: WebsiteSimulator, messages: list[dict[str, Any]], concurrency: int,
                    rate: float | None) -> tuple[dict[str, float], int, float]:
    """Send every message until acknowledged; (request id → ack time, refusals, seconds)."""
    acks: dict[str, float] = {}
    refused = 0
    gate = asyncio.Semaphore(concurrency if rate is None else 100_000)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one(msg: dict[str, Any]) -> None:
            nonlocal refused
            async with gate:
                while True:
                    body, headers = site.sign(msg)
                    try:
                        async with http.post(url, data=body, headers=headers) as r:
                            await r.read()
                            if r.status == 200:
                                acks[msg["data"]["request_id"]] = time.time()
                                return
                    except aiohttp.ClientError:
                        pass
                    refused += 1
                    await asyncio.sleep(0.5)  # as a platform resends

        started = time.perf_counter()
        if rate is None:
            await asyncio.gather(*(one(m) for m in messages))
        else:
            tasks = []
            for i, msg in enumerate(messages):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(msg)))
            await asyncio.gather(*tasks)
        return acks, refused, time.perf_counter() - started


async def _arrivals(port: int) -> dict[str, list[Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/arrivals") as r:
        return orjson.loads(await r.read())


async def _wait_answered(port: int, n: int, timeout: float) -> dict[str, list[Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = await _arrivals(port)
        if sum(1 for a in got.values() if a[3] is not None) >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.25)


def run_once(label: str, args: argparse.Namespace, hang_fraction: float, work: Path,
             processes: int | None = None) -> Run:
    site_secret, push_secret = standard_webhooks.new_secret(), standard_webhooks.new_secret()
    hub_port, recv_port = free_port(), free_port()
    receiver = subprocess.Popen([sys.executable, str(ROOT / "bench/push_receiver.py"), str(recv_port), push_secret,
                                 "--hang-fraction", str(hang_fraction), "--hang-seconds", str(HANG_SECONDS)],
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    run_dir = work / label.replace(" ", "-").replace("%", "pct")
    run_dir.mkdir()
    with bench_database(args.storage, run_dir, args.postgres_url) as url:
        config = run_dir / "config.yaml"
        # The shipped defaults, but for what every deployment must say for itself.
        config.write_text(yaml.safe_dump(with_settings({
            "server": {"listen": f"127.0.0.1:{hub_port}"},
            "storage": {"url": url},
            "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()},
            "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
            "destinations": [{"id": "erp", "kind": "webhook", "url": f"http://127.0.0.1:{recv_port}/hook",
                              "secret": push_secret}],
            "sync": [{"on": ["ticket.created"], "to": "erp"}],
            **({"supervisor": {"processes": processes}} if processes else {}),
        }, args.settings)))
        log = (run_dir / "hub.log").open("wb")
        hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_port(hub_port)
            wait_port(recv_port)
            site = WebsiteSimulator(secret=site_secret, seed=1111)
            messages = [site.request() for _ in range(args.requests)]
            first_sent = time.time()
            acks, refused, ingest = asyncio.run(_send_all(f"http://127.0.0.1:{hub_port}/webhooks/site", site,
                                                          messages, args.concurrency, args.rate))
            got = asyncio.run(_wait_answered(recv_port, args.requests, timeout=HANG_SECONDS + 120))
        finally:
            hub.terminate()
            hub.wait(60)
            receiver.terminate()
            receiver.wait(10)
    answered = {a[0]: a for a in got.values() if a[3] is not None}
    missing = set(acks) - set(answered)
    if missing:
        raise SystemExit(f"{label}: {len(missing)} acknowledged tickets never pushed (see {run_dir}/hub.log)")
    normal = [answered[t][3] - acks[t] for t in acks if answered[t][2] == 1]
    hung = [answered[t][3] - acks[t] for t in acks if answered[t][2] > 1]
    last = max(a[3] for a in answered.values())
    return Run(label, len(acks), ingest, last - first_sent, normal, hung, refused)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float, default=None, help="sustained offered rate, requests/s")
    ap.add_argument("--hang-fraction", type=float, default=0.01)
    ap.add_argument("--processes", default=None,
                    help="supervisor.processes, or several to compare (1,2); default: the shipped auto")
    storage_arguments(ap)
    setting_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-e2e-"))
    counts = [int(p) for p in args.processes.split(",")] if args.processes else [None]
    first = counts[0]
    runs = [run_once("every push answered" + (f", {first} proc" if first else ""), args, 0.0, work, first),
            run_once(f"{args.hang_fraction:.0%} of pushes hang", args, args.hang_fraction, work, first)]
    for n in counts[1:]:
        runs.append(run_once(f"every push answered, {n} proc", args, 0.0, work, n))
    offered = f"offered {args.rate:.0f}/s" if args.rate else f"concurrency {args.concurrency}"
    print(f"{args.requests} signed website requests -> {args.requests} verified pushes, {args.storage}, "
          f"{offered}, shipped defaults (pipeline and delivery on)")
    print(f"{'':30}{'ingest req/s':>13}{'tickets/s':>11}{'ack->push p50':>15}{'p99':>9}{'503s':>6}")
    for r in runs:
        print(f"{r.label:30}{r.sent / r.ingest_seconds:>13.0f}{r.sent / r.end_to_end_seconds:>11.0f}"
              f"{_pct(r.latencies, 0.5):>14.3f}s{_pct(r.latencies, 0.99):>8.3f}s{r.refused:>6}")
    hung = runs[1].hung_latencies
    if hung:
        print(f"{'':30}the {len(hung)} hung pushes arrived after their retry: p50 {statistics.median(hung):.1f}s "
              f"(destination timeout {HANG_SECONDS - 20:.0f}s + backoff)")
    base, slow = runs[:2]
    print(f"other tickets' p50 with hanging pushes / without: {_pct(slow.latencies, .5) / _pct(base.latencies, .5):.2f}")


if __name__ == "__main__":
    main()
