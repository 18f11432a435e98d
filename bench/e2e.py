"""End to end as operators run it: signed website requests in, verified pushes out.

    python bench/e2e.py [--requests 3000] [--concurrency 32] [--rate R]
                        [--hang-fraction 0.01] [--storage sqlite|postgres] [--processes 1,2]
                        [--destinations erp,wms,finance [--outage wms]]

Starts ``hub run`` with the shipped defaults (pipeline and delivery on, one
signed webhook destination) and bench/push_receiver.py, each in a process of
its own, sends N distinct signed after-sales requests (at a concurrency, or
at a sustained offered ``--rate`` per second) and waits until every ticket's
push has been answered. Prints the ingest rate, end-to-end tickets/s (first
request sent → last push answered), acknowledgement → push latency p50/p99
and the CPU the hub's processes spent per ticket (user + system, every
process and thread: steadier than a rate on a box shared with other work).

It runs twice in one invocation: every push answered at once (the baseline),
then ``--hang-fraction`` of the pushes hanging on their first attempt past
the destination's timeout (10 s). The other tickets' latency is printed
beside the baseline's — one slow push must not hold them up — and the hung
ones apart (they arrive after the timeout and a retry's backoff).

With ``--destinations erp,wms,finance`` every ticket is pushed to each of
those kinds (the ERP as its signed-JSON variant, each destination with a
receiver process of its own): three pushes per ticket, and the latency is
received → the ticket's *last* push answered. ``--outage DEST`` adds a run
in which that destination is down while the requests come in and returns
afterwards: its backlog must drain, and the other destinations' p99 is
printed beside the run without the outage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import lean_http  # noqa: E402
from bench.common import (  # noqa: E402
    bench_database,
    cpu_by_role,
    cpu_seconds,
    free_port,
    per_ticket,
    process_tree,
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
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process role, first request → last push
    harness: dict[str, float] = field(default_factory=dict)  # the bench's own CPU seconds: sender, receivers
    others: list[float] | None = None   # ack → last push answered at the destinations that stayed up
    drained: float | None = None        # seconds after it returned until the downed destination had all


def _bench_cpu(receivers: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the bench's own parts, which share the box with the
    hub: this process (it signs and sends the requests) and the receivers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"sender": own.ru_utime + own.ru_stime,
            "receivers": sum(cpu_seconds([r.pid]) for r in receivers.values())}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _send_all(port: int, path: str, site: WebsiteSimulator, messages: list[dict[str, Any]],
                    concurrency: int, rate: float | None,
                    signed: list[tuple[bytes, dict[str, str]]]) -> tuple[dict[str, float], int, float]:
    """Send every message until acknowledged; (request id → ack time, refusals, seconds).
    ``signed``: each message's body and headers, signed before the clock starts (a
    platform signs on its own machines, not on the hub's cores); a resend signs afresh.
    Sent through bench/lean_http.py: this sender shares the hub's cores."""
    acks: dict[str, float] = {}
    refused = 0
    gate = asyncio.Semaphore(concurrency if rate is None else 100_000)
    http = lean_http.Client("127.0.0.1", port)

    async def one(msg: dict[str, Any], first: tuple[bytes, dict[str, str]]) -> None:
        nonlocal refused
        async with gate:
            body, headers = first
            while True:
                try:
                    status, _ = await http.post(path, body, headers)
                    if status == 200:
                        acks[msg["data"]["request_id"]] = time.time()
                        return
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    pass
                refused += 1
                await asyncio.sleep(0.5)  # as a platform resends
                body, headers = site.sign(msg)

    started = time.perf_counter()
    if rate is None:
        await asyncio.gather(*(one(m, sig) for m, sig in zip(messages, signed, strict=True)))
    else:
        tasks = []
        for i, (msg, sig) in enumerate(zip(messages, signed, strict=True)):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(msg, sig)))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    await http.close()
    return acks, refused, elapsed


async def _arrivals(port: int) -> dict[str, list[Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/arrivals") as r:
        return orjson.loads(await r.read())


async def _wait_answered(port: int, n: int, timeout: float) -> dict[str, list[Any]]:
    """Every arrival, once ``n`` pushes are answered (or at the deadline). Asks the
    cheap count while it waits: the whole list costs the receiver and this process
    milliseconds of the cores the hub is running on."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{port}/count") as r:
                if orjson.loads(await r.read())["answered"] >= n:
                    break
            await asyncio.sleep(0.25)
    return await _arrivals(port)


def _destination(kind: str, port: int, secret: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/hook"
    if kind == "erp":
        return {"id": "erp", "kind": "erp", "variant": "webhook", "url": url, "secret": secret}
    return {"id": kind, "kind": kind, "url": url, "secret": secret}


def _receiver(port: int, secret: str, hang_fraction: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "bench/push_receiver.py"), str(port), secret,
                             "--hang-fraction", str(hang_fraction), "--hang-seconds", str(HANG_SECONDS)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_once(label: str, args: argparse.Namespace, hang_fraction: float, work: Path,
             processes: int | None = None, outage: str | None = None) -> Run:
    site_secret = standard_webhooks.new_secret()
    kinds = args.destinations.split(",")
    hub_port = free_port()
    ports = {k: free_port() for k in kinds}
    secrets = {k: standard_webhooks.new_secret() for k in kinds}
    receivers = {k: _receiver(ports[k], secrets[k], hang_fraction) for k in kinds if k != outage}
    run_dir = work / label.replace(" ", "-").replace("%", "pct").replace(",", "")
    run_dir.mkdir()
    with bench_database(args.storage, run_dir, args.postgres_url) as url:
        config = run_dir / "config.yaml"
        # The shipped defaults, but for what every deployment must say for itself.
        config.write_text(yaml.safe_dump(with_settings({
            "server": {"listen": f"127.0.0.1:{hub_port}"},
            "storage": {"url": url},
            "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()},
            "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
            "destinations": [_destination(k, ports[k], secrets[k]) for k in kinds],
            "sync": [{"on": ["ticket.created"], "to": [("erp" if k == "erp" else k) for k in kinds]}],
            **({"supervisor": {"processes": processes}} if processes else {}),
        }, args.settings)))
        log = (run_dir / "hub.log").open("wb")
        hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=ROOT)
        returned = None
        try:
            wait_port(hub_port)
            for k in receivers:
                wait_port(ports[k])
            site = WebsiteSimulator(secret=site_secret, seed=1111)
            messages = [site.request() for _ in range(args.requests)]
            signed = [site.sign(m) for m in messages]
            cpu_before = cpu_by_role(process_tree(hub.pid))
            bench_before = _bench_cpu(receivers)
            first_sent = time.time()
            acks, refused, ingest = asyncio.run(_send_all(hub_port, "/webhooks/site", site,
                                                          messages, args.concurrency, args.rate, signed))
            up = {k: asyncio.run(_wait_answered(ports[k], args.requests, timeout=HANG_SECONDS + 120))
                  for k in receivers}
            got = dict(up)
            if outage is not None:
                receivers[outage] = _receiver(ports[outage], secrets[outage], 0.0)  # it comes back
                wait_port(ports[outage])
                returned = time.time()
                # The circuit's cooldown (30 s by default, doubling) and the pushes' own backoff.
                got[outage] = asyncio.run(_wait_answered(ports[outage], args.requests, timeout=1800))
            cpu = {role: spent - cpu_before.get(role, 0.0)
                   for role, spent in cpu_by_role(process_tree(hub.pid)).items()}
            harness = {k: v - bench_before.get(k, 0.0) for k, v in _bench_cpu(receivers).items()}
        finally:
            hub.terminate()
            hub.wait(60)
            for r in receivers.values():
                r.terminate()
                r.wait(10)
    answered = {k: {a[0]: a for a in g.values() if a[3] is not None} for k, g in got.items()}
    for k, a in answered.items():
        missing = set(acks) - set(a)
        if missing:
            raise SystemExit(f"{label}: {len(missing)} acknowledged tickets never pushed to {k} "
                             f"(see {run_dir}/hub.log)")

    def latency(t: str, among: list[str]) -> float:
        return max(answered[k][t][3] for k in among) - acks[t]

    def hung_first(t: str) -> bool:
        return any(answered[k][t][2] > 1 for k in receivers if k != outage)

    every = list(answered)
    stayed = [k for k in every if k != outage]
    normal = [latency(t, every) for t in acks if not hung_first(t)]
    hung = [latency(t, every) for t in acks if hung_first(t)]
    last = max(a[3] for g in answered.values() for a in g.values())
    run = Run(label, len(acks), ingest, last - first_sent, normal, hung, refused, cpu, harness)
    if outage is not None:
        run.others = [latency(t, stayed) for t in acks]
        run.drained = max(a[3] for a in answered[outage].values()) - (returned or 0)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float, default=None, help="sustained offered rate, requests/s")
    ap.add_argument("--hang-fraction", type=float, default=0.01,
                    help="pushes that hang on their first attempt, in a second run (0: no second run)")
    ap.add_argument("--destinations", default="webhook",
                    help="destination kinds each ticket is pushed to: webhook, or erp,wms,finance")
    ap.add_argument("--outage", default=None, help="one of --destinations, down while requests come in")
    ap.add_argument("--processes", default=None,
                    help="supervisor.processes, or several to compare (1,2); default: the shipped auto")
    storage_arguments(ap)
    setting_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-e2e-"))
    counts = [int(p) for p in args.processes.split(",")] if args.processes else [None]
    first = counts[0]
    runs = [run_once("every push answered" + (f", {first} proc" if first else ""), args, 0.0, work, first)]
    if args.hang_fraction:  # 0: only the run where every push is answered
        runs.append(run_once(f"{args.hang_fraction:.0%} of pushes hang", args, args.hang_fraction, work, first))
    for n in counts[1:]:
        runs.append(run_once(f"every push answered, {n} proc", args, 0.0, work, n))
    if args.outage:
        runs.append(run_once(f"{args.outage} down meanwhile", args, 0.0, work, first, outage=args.outage))
    offered = f"offered {args.rate:.0f}/s" if args.rate else f"concurrency {args.concurrency}"
    kinds = args.destinations.split(",")
    print(f"{args.requests} signed website requests -> {args.requests * len(kinds)} verified pushes "
          f"({', '.join(kinds)}), {args.storage}, {offered}, shipped defaults (pipeline and delivery on)")
    print(f"{'':30}{'ingest req/s':>13}{'tickets/s':>11}{'ack->last push p50':>19}{'p99':>9}{'503s':>6}"
          f"{'hub CPU/ticket':>16}")
    for r in runs:
        print(f"{r.label:30}{r.sent / r.ingest_seconds:>13.0f}{r.sent / r.end_to_end_seconds:>11.0f}"
              f"{_pct(r.latencies, 0.5):>18.3f}s{_pct(r.latencies, 0.99):>8.3f}s{r.refused:>6}"
              f"{sum(r.cpu.values()) / r.sent * 1e6:>13.0f} µs")
    for r in runs:
        print(f"{r.label:30}hub CPU per ticket by process: {per_ticket(r.cpu, r.sent)}"
              f"; the bench's own, on the same cores: {per_ticket(r.harness, r.sent)}")
        if r.harness.get("receivers"):
            # The receivers run the same code whatever the hub's: their CPU swings with
            # the box alone, so this ratio compares the hub's code across runs.
            print(f"{r.label:30}hub CPU / the receivers' CPU: {sum(r.cpu.values()) / r.harness['receivers']:.2f}")
    base = runs[0]
    if args.hang_fraction:
        slow = runs[1]
        if slow.hung_latencies:
            print(f"{'':30}the {len(slow.hung_latencies)} hung pushes arrived after their retry: "
                  f"p50 {statistics.median(slow.hung_latencies):.1f}s "
                  f"(destination timeout {HANG_SECONDS - 20:.0f}s + backoff)")
        print(f"other tickets' p50 with hanging pushes / without: "
              f"{_pct(slow.latencies, .5) / _pct(base.latencies, .5):.2f}")
    if args.outage:
        down = runs[-1]
        assert down.others is not None
        print(f"with {args.outage} down: the other destinations' p99 {_pct(down.others, .99):.3f}s vs "
              f"{_pct(base.latencies, .99):.3f}s with every destination up "
              f"(ratio {_pct(down.others, .99) / _pct(base.latencies, .99):.2f}); "
              f"{args.outage}'s backlog of {down.sent} drained {down.drained:.1f}s after it returned")


if __name__ == "__main__":
    main()
