"""Exports of production size: `hub export` of N tickets to CSV and XLSX.

    python bench/export.py [--tickets 1000000] [--storage sqlite|postgres]

Seeds (SQL) N customers, orders and tickets, then runs `hub export` as an
operator would — a process of its own, contacts masked — to a .csv and to an
.xlsx, and beside them the same exports of a tenth of the tickets. Prints
rows/s and each run's peak RSS: streaming means the peak does not grow with
the rows (the small export is the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import migrate, seed_records  # noqa: E402
from bench.common import bench_database, storage_arguments  # noqa: E402


def export(config: Path, target: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one `hub export` run."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hub", "export", str(target), "-c", str(config)],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"hub export failed: {proc.stderr[-2000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=1_000_000)
    storage_arguments(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub-bench-export-"))
    results = []
    for n in (args.tickets // 10, args.tickets):
        run = work / str(n)
        run.mkdir()
        with bench_database(args.storage, run, args.postgres_url) as url:
            migrate(url)
            took = seed_records(url, customers=n, orders=n, tickets=n)
            config = run / "config.yaml"
            config.write_text(yaml.safe_dump({"storage": {"url": url},
                                              "security": {"pii_key": base64.b64encode(os.urandom(32)).decode()}}))
            for suffix in ("csv", "xlsx"):
                # Each run in a fresh child: RUSAGE_CHILDREN's peak is the largest child so far,
                # so the small runs go first and each figure is read right after its run.
                seconds, peak = export(config, run / f"tickets.{suffix}")
                size = (run / f"tickets.{suffix}").stat().st_size / 1e6
                results.append((n, suffix, seconds, peak, size))
                print(f"{n:>9,} tickets seeded in {took:.0f} s; {suffix:4} {n / seconds:9,.0f} rows/s "
                      f"({seconds:.1f} s, {size:.0f} MB), peak RSS of the largest export so far {peak:.0f} MB",
                      flush=True)
    small = max(p for n, _s, _t, p, _z in results if n == args.tickets // 10)
    big = max(p for n, _s, _t, p, _z in results if n == args.tickets)
    print(f"peak RSS, {args.tickets:,} rows / {args.tickets // 10:,} rows: {big / small:.2f}   (flat: about 1)")


if __name__ == "__main__":
    main()
