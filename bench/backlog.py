"""What bench/burst.py and bench/scale.py share: a database seeded fast (SQL,
not the hub), raw events queued straight into the inbox, and the daemon —
shipped defaults, pipeline and delivery on, every process — draining them to
bench/push_receiver.py while its figures are taken."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    cpu_by_role,
    free_port,
    per_ticket,
    process_tree,
    pss_mb,
    status_mb,
    wait_port,
    with_settings,
)
from connectors.website.simulator import WebsiteSimulator  # noqa: E402
from hub import standard_webhooks  # noqa: E402
from hub.pii import PiiCipher  # noqa: E402

SEED_TIME = "2026-06-18 08:00:00.000000"


def _sqlite_path(url: str) -> str:
    return sa.make_url(url).database or ""


def _pg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(False)


def _sql(url: str, statements: list[str]) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        for stmt in statements:
            conn.execute(stmt)
        conn.execute("COMMIT")
        conn.close()
    else:
        # On stdin, in one transaction: a statement may be longer than an argument may.
        subprocess.run(["psql", _pg_dsn(url), "-qv", "ON_ERROR_STOP=1", "-1", "-o", "/dev/null"],
                       input=";\n".join(statements) + ";", text=True, check=True)


def migrate(url: str) -> None:
    subprocess.run([sys.executable, "-c", f"import asyncio; from hub.storage import Database\n"
                    f"db = Database({url!r})\nasyncio.run(db.migrate())"], check=True, cwd=ROOT)


CONTACT_POOL = 1000  # distinct sealed phones and addresses the seeded customers share


def seed_records(url: str, customers: int, orders: int, tickets: int, pii_key: bytes | None = None) -> float:
    """``customers`` customers with two identities each (site user u1, u2, …; a
    phone index), listed on their rows as the hub keeps them, ``orders``
    orders and ``tickets`` resolved tickets, by SQL.
    With ``pii_key``, each customer also holds what the hub writes for one: a
    phone and an address sealed with that key (from a pool of
    :data:`CONTACT_POOL`, so seeding stays SQL) and an e-mail — without them a
    customer's first event grows its row by ~250 bytes and splits its page, a
    cost no customer the hub created would have. Returns the seconds it took."""
    started = time.perf_counter()
    sqlite = url.startswith("sqlite")
    contacts: list[str] = []
    columns, values, joined = "", "", ""
    if pii_key is not None:
        cipher = PiiCipher(pii_key)
        site = WebsiteSimulator(secret=standard_webhooks.new_secret(), seed=3)
        pool = [site.customer() for _ in range(CONTACT_POOL)]
        # Ciphertexts are "v1:<key id>:<base64>": no quote to escape.
        rows = ", ".join(f"({n}, '{cipher.encrypt(c.phone)}', '{cipher.encrypt(c.address)}')"
                         for n, c in enumerate(pool))
        contacts = ["CREATE TEMPORARY TABLE seed_contacts (n INTEGER PRIMARY KEY, phone_enc TEXT, address_enc TEXT)",
                    f"INSERT INTO seed_contacts VALUES {rows}"]
        columns = ", phone_enc, address_enc, email"
        values = ", c.phone_enc, c.address_enc, 'seed' || i || '@example.com'"
        joined = f" JOIN seed_contacts AS c ON c.n = i % {CONTACT_POOL}"

    def series(n: int) -> str:
        if sqlite:
            return (f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
                    "SELECT i FROM s)")
        return f"(SELECT generate_series(1, {n}) AS i)"

    ts = f"'{SEED_TIME}'" if sqlite else f"'{SEED_TIME}+00'::timestamptz"
    hexed = "lower(hex(randomblob(16)))" if sqlite else "md5(i::text)"
    # A phone identity's value (a blind index there): 32 hex digits at a random-looking
    # place in the (kind, value) index, known from i alone, so the customer's row can
    # list it too. Customer i is known by identities i (site user) and customers + i.
    phone = ("printf('%08x%08x%016x', (i * 2654435761) % 4294967296, (i * 40503) % 4294967296, i)" if sqlite
             else "md5(i::text)")
    pair = "json_array" if sqlite else "json_build_array"
    listed = f"{pair}({pair}(i, 'site_user', 'u' || i), {pair}({customers} + i, 'phone', {phone}))"
    _sql(url, [
        *contacts,
        f"INSERT INTO customers (id, display_name, phone_index, identities, created_at, updated_at{columns}) "
        f"SELECT i, 'seed' || i, {hexed}, {listed}, {ts}, {ts}{values} FROM {series(customers)} AS g{joined} "
        "ORDER BY i",
        f"INSERT INTO customer_identities (id, customer_id, kind, value, created_at) "
        f"SELECT i, i, 'site_user', 'u' || i, {ts} FROM {series(customers)} AS g",
        f"INSERT INTO customer_identities (id, customer_id, kind, value, created_at) "
        f"SELECT {customers} + i, i, 'phone', {phone}, {ts} FROM {series(customers)} AS g",
        f"INSERT INTO orders (id, channel, source_id, external_id, customer_id, is_stub, created_at, updated_at) "
        f"SELECT i, 'website', 'site', 'SEEDO' || i, 1 + (i % {customers}), "
        f"{'0' if sqlite else 'false'}, {ts}, {ts} FROM {series(orders)} AS g",
        f"INSERT INTO tickets (id, channel, source_id, external_id, type, status, priority, order_id, "
        f"customer_id, created_at, updated_at) "
        f"SELECT i, 'website', 'site', 'SEEDT' || i, 'refund_only', 'resolved', 'normal', "
        f"1 + (i % {orders}), 1 + (i % {customers}), {ts}, {ts} FROM {series(tickets)} AS g",
    ] + ([] if sqlite else [f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"
                            for t in ("customers", "customer_identities", "orders", "tickets")]
         + ["ANALYZE"]))
    return time.perf_counter() - started


def queue_events(url: str, pii_key: bytes, n: int, seed: int = 7, key_prefix: str = "ev") -> float:
    """``n`` distinct website after-sales requests, sealed, straight into the inbox."""
    started = time.perf_counter()
    cipher = PiiCipher(pii_key)
    site = WebsiteSimulator(secret=standard_webhooks.new_secret(), seed=seed)
    chunk = 20_000
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            key = f"{key_prefix}_{i:08d}"
            rows.append(("site", key, json.dumps({"webhook-id": key}),
                         cipher.seal_body(orjson.dumps(site.request()))))
        if url.startswith("sqlite"):
            conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO raw_events (source_id, dedupe_key, received_at, headers, body, state, "
                             f"attempts) VALUES (?, ?, '{SEED_TIME}', ?, ?, 'pending', 0)", rows)
            conn.execute("COMMIT")
            conn.close()
        else:
            import asyncio

            import asyncpg

            async def copy(rows: list[tuple[Any, ...]] = rows) -> None:
                pg = await asyncpg.connect(_pg_dsn(url))
                try:
                    await pg.executemany(
                        "INSERT INTO raw_events (source_id, dedupe_key, received_at, headers, body, state, attempts) "
                        f"VALUES ($1, $2, '{SEED_TIME}+00', $3::json, $4, 'pending', 0)", rows)
                finally:
                    await pg.close()

            asyncio.run(copy())
    return time.perf_counter() - started


@dataclass
class Drained:
    seconds: float
    pushes: int
    tickets: int
    peak_rss_mb: float   # each process's peak RSS, summed
    peak_pss_mb: float   # the largest sum of PSS seen (shared pages counted once)
    processes: int
    cpu: dict[str, float]  # CPU seconds of each hub process by role, start to the last push
    first_push: float = 0.0  # seconds from starting the hub to the first push answered

    @property
    def rate(self) -> float:
        """Tickets/s over the whole run, the hub's start included: the figure."""
        return self.tickets / self.seconds

    @property
    def steady_rate(self) -> float:
        """Tickets/s from the first push to the last: without the hub's start."""
        return self.tickets / max(1e-9, self.seconds - self.first_push)

    def rate_line(self) -> str:
        """Tickets/s over the whole run (the figure) and from the first push on."""
        return (f"{self.rate:7.0f} tickets/s  ({self.seconds:.1f} s; "
                f"first push after {self.first_push:.1f} s, {self.steady_rate:.0f} tickets/s from there)")

    @property
    def cpu_per_ticket(self) -> float:
        """Seconds of the hub's CPU (every process) a ticket."""
        return sum(self.cpu.values()) / max(1, self.tickets)

    def cpu_line(self) -> str:
        """The hub's CPU per ticket, by process role (steadier than a rate on a busy box)."""
        roles = {role: spent for role, spent in self.cpu.items() if role != "parent"}
        return (f"hub CPU {self.cpu_per_ticket * 1e6:.0f} µs a ticket: "
                + per_ticket(roles, self.tickets))


def drain(url: str, pii_key: bytes, expected: int, work: Path, processes: int | None = None,
          timeout: float = 7200, settings: list[str] | None = None) -> Drained:
    """Start the daemon and a push receiver; return once ``expected`` pushes are answered."""
    hub_port, recv_port = free_port(), free_port()
    push_secret = standard_webhooks.new_secret()
    receiver = subprocess.Popen([sys.executable, str(ROOT / "bench/push_receiver.py"), str(recv_port), push_secret],
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    config = work / f"config-{hub_port}.yaml"
    config.write_text(yaml.safe_dump(with_settings({
        "server": {"listen": f"127.0.0.1:{hub_port}"},
        "storage": {"url": url},
        "security": {"pii_key": base64.b64encode(pii_key).decode()},
        "sources": [{"id": "site", "kind": "website", "secret": standard_webhooks.new_secret()}],
        "destinations": [{"id": "erp", "kind": "webhook", "url": f"http://127.0.0.1:{recv_port}/hook",
                          "secret": push_secret}],
        "sync": [{"on": ["ticket.created"], "to": "erp"}],
        "logging": {"level": "warning"},
        **({"supervisor": {"processes": processes}} if processes else {}),
    }, settings or [])))
    log = (work / f"hub-{hub_port}.log").open("wb")
    started = time.perf_counter()
    started_at = time.time()  # the receiver stamps pushes with time.time()
    hub = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(config)], stdout=log,
                           stderr=subprocess.STDOUT, cwd=ROOT)
    peak = peak_pss = 0.0
    cpu: dict[str, float] = {}
    try:
        wait_port(recv_port)
        pids: list[int] = []
        while True:
            pids = sorted(set(pids) | set(process_tree(hub.pid)))
            peak = max(peak, status_mb(pids))
            peak_pss = max(peak_pss, pss_mb(pids))
            with urllib.request.urlopen(f"http://127.0.0.1:{recv_port}/count", timeout=10) as r:
                totals = json.loads(r.read())
            answered = totals["answered"]
            cpu = cpu_by_role(pids)
            if answered >= expected:
                break
            if hub.poll() is not None:
                raise SystemExit(f"the hub exited with {hub.returncode}; see {log.name}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"only {answered} of {expected} pushes after {timeout:.0f} s")
            time.sleep(0.5)
        # The receiver's stamps, not this loop's half-second polls: a 7-second run
        # would otherwise carry up to 7 % of error.
        seconds = totals["last"] - started_at
        first_push = totals["first"] - started_at
        nproc = len(process_tree(hub.pid))
    finally:
        hub.terminate()
        hub.wait(120)
        receiver.terminate()
        receiver.wait(10)
    tickets = _count(url, "SELECT count(*) FROM tickets WHERE external_id NOT LIKE 'SEED%'")
    return Drained(seconds, answered, tickets, peak, peak_pss, max(1, nproc - 1) if nproc > 1 else 1, cpu,
                   first_push)


def _count(url: str, sql: str) -> int:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    out = subprocess.run(["psql", _pg_dsn(url), "-tAc", sql], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())
