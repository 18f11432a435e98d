"""Cost that grows with the data: the same event stream on an empty database
and on one holding a merchant's history, in the same run.

    python bench/scale.py [--customers 1000000] [--events 20000] [--rounds 5]
                          [--storage sqlite|postgres]

The seeded database holds ``--customers`` customers with two identities each,
as many orders and as many resolved tickets (SQL, fast). The stream's site
user ids run u100000–u999999, so with a million seeded every event finds an
existing customer, and each brings a phone that customer never used: a new
identity, a changed row and a new ticket and order filed under an old
customer — the worst case for the indexes, kept on purpose. Both databases
then get the same ``--events`` raw events queued and drained by ``hub run`` with the shipped
defaults (pipeline and delivery on, every process) — tickets/s of each and
their ratio are printed. Goal: seeded / empty >= 0.8.

One side lasts 6–15 s on a 2-core box whose speed swings by half between
minutes, so one pair decides little: the two databases are made once (as
templates) and each of ``--rounds`` rounds drains a fresh copy of each, the
order alternating (empty first, then seeded first, …) so a drift of the box
weighs on both sides alike. Printed: every round's ratio, their median, and
the ratio of the summed rates. Rounds of one hour ranged 0.70–0.85 at the
same code, so the default is five; beside the rates, the ratio of the hub's
CPU a ticket (empty / seeded), which drifts less than a rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import Drained, drain, migrate, queue_events, seed_records  # noqa: E402
from bench.common import bench_database, setting_arguments, storage_arguments  # noqa: E402


def one(label: str, args: argparse.Namespace, work: Path, template: str, pii_key: bytes) -> Drained:
    run = work / label
    run.mkdir()
    with bench_database(args.storage, run, args.postgres_url, name=label, template=template) as url:
        queue_events(url, pii_key, args.events, seed=99)  # the same stream for both
        return drain(url, pii_key, args.events, run, args.processes, settings=args.settings)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, default=None, help="supervisor.processes (default: auto)")
    storage_arguments(ap)
    setting_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-scale-"))
    pii_key = os.urandom(32)
    sides = ("empty", "seeded")
    runs: dict[str, list[Drained]] = {side: [] for side in sides}
    walls: list[float] = []   # each round's seeded / empty, over the whole runs
    steady: list[float] = []  # the same from each side's first push on
    cpus: list[float] = []    # each round's empty / seeded CPU a ticket (as a rate ratio reads)
    for side in sides:
        (work / f"{side}-template").mkdir()
    with bench_database(args.storage, work / "empty-template", args.postgres_url, name="empty_template") as empty, \
            bench_database(args.storage, work / "seeded-template", args.postgres_url, name="seeded_template") as full:
        migrate(empty)
        migrate(full)
        took = seed_records(full, customers=args.customers, orders=args.customers, tickets=args.customers,
                            pii_key=pii_key)
        print(f"seeded {args.customers} customers, {2 * args.customers} identities, {args.customers} orders, "
              f"{args.customers} tickets in {took:.0f} s")
        templates = {"empty": empty, "seeded": full}
        print(f"{args.events} events, {args.storage}, hub run with the shipped defaults")
        for n in range(args.rounds):
            for side in (sides if n % 2 == 0 else sides[::-1]):
                d = one(f"{side}-{n + 1}", args, work, templates[side], pii_key)
                runs[side].append(d)
                label = "empty database" if side == "empty" else f"{args.customers:,} customers seeded"
                print(f"  round {n + 1}  {label:30} {d.rate_line()}\n{'':44}peak RSS summed {d.peak_rss_mb:.0f} MB, "
                      f"PSS {d.peak_pss_mb:.0f} MB; {d.cpu_line()}", flush=True)
            e, f = runs["empty"][-1], runs["seeded"][-1]
            walls.append(f.rate / e.rate)
            steady.append(f.steady_rate / e.steady_rate)
            cpus.append(e.cpu_per_ticket / f.cpu_per_ticket)
            print(f"  round {n + 1}  ratio seeded / empty: {walls[-1]:.2f}   (first push → last: {steady[-1]:.2f}; "
                  f"CPU a ticket, empty / seeded: {cpus[-1]:.2f})", flush=True)
    summed = {side: sum(d.rate for d in runs[side]) for side in sides}
    print(f"  ratio seeded / empty, median of {args.rounds} rounds: {statistics.median(walls):.2f}   goal >= 0.8   "
          f"(rounds {' / '.join(f'{r:.2f}' for r in walls)}; of the summed rates {summed['seeded'] / summed['empty']:.2f}; "
          f"first push → last, median {statistics.median(steady):.2f}; "
          f"CPU a ticket, empty / seeded, median {statistics.median(cpus):.2f})")


if __name__ == "__main__":
    main()
