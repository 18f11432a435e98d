"""Cost that grows with the data: the same event stream on an empty database
and on one holding a merchant's history, in the same run.

    python bench/scale.py [--customers 1000000] [--events 20000] [--storage sqlite|postgres]

The seeded database holds ``--customers`` customers with two identities each,
as many orders and as many resolved tickets (SQL, fast); some of the
stream's customers are among them (site user ids overlap), so linking finds
and updates existing customers. Both databases then get the same
``--events`` raw events queued and drained by ``hub run`` with the shipped
defaults (pipeline and delivery on, every process) — tickets/s of each and
their ratio are printed. Goal: seeded / empty >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import Drained, drain, migrate, queue_events, seed_records  # noqa: E402
from bench.common import bench_database, setting_arguments, storage_arguments  # noqa: E402


def one(label: str, args: argparse.Namespace, work: Path, seeded: int) -> Drained:
    run = work / label
    run.mkdir()
    pii_key = os.urandom(32)
    with bench_database(args.storage, run, args.postgres_url) as url:
        migrate(url)
        if seeded:
            took = seed_records(url, customers=seeded, orders=seeded, tickets=seeded)
            print(f"seeded {seeded} customers, {2 * seeded} identities, {seeded} orders, {seeded} tickets "
                  f"in {took:.0f} s")
        queue_events(url, pii_key, args.events, seed=99)  # the same stream for both
        return drain(url, pii_key, args.events, run, args.processes, settings=args.settings)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=None, help="supervisor.processes (default: auto)")
    storage_arguments(ap)
    setting_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-scale-"))
    empty = one("empty", args, work, 0)
    full = one("seeded", args, work, args.customers)
    print(f"{args.events} events, {args.storage}, hub run with the shipped defaults")
    for label, d in (("empty database", empty), (f"{args.customers:,} customers seeded", full)):
        print(f"  {label:32} {d.rate_line()}\n{'':37}peak RSS summed {d.peak_rss_mb:.0f} MB, "
              f"PSS {d.peak_pss_mb:.0f} MB; {d.cpu_line()}")
    print(f"  ratio seeded / empty: {(full.tickets / full.seconds) / (empty.tickets / empty.seconds):.2f}"
          f"   goal >= 0.8   (first push → last: {full.steady_rate / empty.steady_rate:.2f})")


if __name__ == "__main__":
    main()
