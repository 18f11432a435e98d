"""Helpers shared by the benchmarks: ports and a throw-away database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from hub.storage import Database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


@functools.cache
def _say_if_nothing_analyzes(server_url: str) -> None:
    """Once a run: a server with autovacuum off never ANALYZEs the tables a run
    fills, which operators' servers do (the hub warns them at start, by the
    same check)."""
    async def off() -> bool:
        db = Database(server_url)
        try:
            return await db.autovacuum_off()
        finally:
            await db.close()

    if asyncio.run(off()):
        print("note: this PostgreSQL runs with autovacuum off; tables filled from empty are never analyzed")


@contextlib.contextmanager
def bench_database(storage: str, workdir: Path, postgres_url: str, *, name: str = "",
                   template: str | None = None) -> Iterator[str]:
    """A SQLite file in ``workdir``, or a fresh PostgreSQL database dropped afterwards
    (``name`` tells several apart). With ``template`` (a URL this gave), a copy of
    that database: SQLite copies the file, PostgreSQL creates it ``TEMPLATE``."""
    if storage == "sqlite":
        path = workdir / "hub.db"
        if template is not None:
            source = Path(sa.make_url(template).database or "")
            for suffix in ("", "-wal"):
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", f"{path}{suffix}")
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            if template is not None:  # a copy: gigabytes, once measured no longer needed
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    db_name = f"hub_bench_{os.getpid()}{'_' + name if name else ''}"
    admin = sa.make_url(postgres_url).set(drivername="postgresql")
    dsn = admin.render_as_string(False)
    copy = f' TEMPLATE "{sa.make_url(template).database}"' if template is not None else ""
    subprocess.run(["psql", dsn, "-qc", f'CREATE DATABASE "{db_name}"{copy}'], check=True)
    _say_if_nothing_analyzes(admin.set(drivername="postgresql+asyncpg").render_as_string(False))
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=db_name).render_as_string(False)
    finally:
        subprocess.run(["psql", dsn, "-qc", f'DROP DATABASE "{db_name}" WITH (FORCE)'], check=True)


def storage_arguments(ap: argparse.ArgumentParser) -> None:
    """``--storage sqlite|postgres`` and ``--postgres-url``, as every benchmark takes them."""
    ap.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--postgres-url", default=os.environ.get("HUB_TEST_POSTGRES_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))


def setting_arguments(ap: argparse.ArgumentParser) -> None:
    """``--set key.path=value`` (repeatable): a config key off its default, to
    measure a tuning — the figures then say which keys were changed."""
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a config key off its shipped default, e.g. pipeline.batch=400")


def with_settings(config: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``config`` with each ``key.path=value`` (the value read as YAML) set in it."""
    for item in settings:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--set {item!r}: expected key.path=value")
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(raw)
    return config


def process_tree(pid: int) -> list[int]:
    """``pid`` and the processes it started (`hub run`'s children)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


def status_mb(pids: list[int], field: str = "VmHWM") -> float:
    """A /proc status figure (peak RSS by default) of these processes, summed, in MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def pss_mb(pids: list[int]) -> float:
    """The proportional set size of these processes, summed, in MB: each page
    shared by k of them (the interpreter, the libraries' code, the OS's cache
    of the database file) counted 1/k in each, so the sum is the memory they
    take together. A sum of RSS counts a shared page once per process."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU these processes have used so far (all their threads), summed.
    Steadier than a rate on a shared box: what the work cost, whatever else ran."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def cpu_by_role(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of each hub process, keyed by its ``--role`` (``parent``, ``all``)."""
    out: dict[str, float] = {}
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        role = "parent" if b"hub.processes" in argv else "all"
        if b"--role" in argv:
            role = argv[argv.index(b"--role") + 1].decode()
        elif argv[0].startswith(b"hub: "):  # a forked child's title: "hub: ROLES (CONFIG)"
            role = argv[0][5:].split(b" ", 1)[0].decode()
        out[role] = out.get(role, 0.0) + cpu_seconds([pid])
    return out


def per_ticket(cpu: dict[str, float], tickets: int) -> str:
    """CPU seconds by role as microseconds a ticket: ``"delivery 258 µs, intake 186 µs"``."""
    return ", ".join(f"{role} {spent / max(1, tickets) * 1e6:.0f} µs" for role, spent in sorted(cpu.items()))
