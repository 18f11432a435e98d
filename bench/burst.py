"""A Double-11 backlog: N raw events already in the inbox, drained by the daemon.

    python bench/burst.py [--events 1000000] [--processes N] [--storage sqlite|postgres]

The events (distinct, sealed website after-sales requests) are queued by SQL
before the hub starts — as if intake had taken them while processing was
behind. Then ``hub run`` with the shipped defaults (pipeline and delivery on,
one signed webhook destination, every process) works the backlog off, and
the bench waits until every push has been answered by bench/push_receiver.py.
Prints tickets/s and pushes/s over the whole drain (start-up included) and
the memory of the hub's processes: peak RSS summed (each shared page once per
process) and peak PSS summed (each shared page once).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import drain, migrate, queue_events  # noqa: E402
from bench.common import bench_database, setting_arguments, storage_arguments  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=None, help="supervisor.processes (default: auto)")
    storage_arguments(ap)
    setting_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-burst-"))
    pii_key = os.urandom(32)
    with bench_database(args.storage, work, args.postgres_url) as url:
        migrate(url)
        queued = queue_events(url, pii_key, args.events)
        print(f"{args.events} raw events queued in {queued:.0f} s ({args.storage})")
        d = drain(url, pii_key, args.events, work, args.processes, settings=args.settings)
    print(f"drained by {d.processes} hub process(es) in {d.seconds:.0f} s: "
          f"{d.rate:.0f} tickets/s, {d.pushes / d.seconds:.0f} pushes/s "
          f"({d.tickets} tickets, {d.pushes} pushes answered)")
    print(f"memory of all the hub's processes: peak RSS summed {d.peak_rss_mb:.0f} MB (a page shared by "
          f"several processes counted in each), peak PSS summed {d.peak_pss_mb:.0f} MB (counted once)")
    print(d.cpu_line())
    print("goal: >= 2000 tickets/s, peak memory < 300 MB")


if __name__ == "__main__":
    main()
