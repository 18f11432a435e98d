"""The ``hub`` command: run the daemon, check a config, try a mapping, run the demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hub.config import HubConfig, load_config
from hub.errors import ConfigError, HubError, MappingError, Quarantine

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="After-sales channel hub: every channel's refunds, returns and complaints "
                       "as one ticket, synced downstream exactly once in effect.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
mapping_app = typer.Typer(no_args_is_help=True, help="Mappings.")
dlq_app = typer.Typer(no_args_is_help=True,
                      help="Dead letters: pushes that gave up, each holding its ticket's later pushes.")
app.add_typer(db_app, name="db")
app.add_typer(mapping_app, name="mapping")
tickets_app = typer.Typer(no_args_is_help=True, help="Tickets.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(tickets_app, name="tickets")
console = Console(stderr=True)
out = Console()

ConfigPath = Annotated[Path | None, typer.Option("--config", "-c", help="config file (default: $HUB_CONFIG or ./config.yaml)")]


def _config_path(path: Path | None) -> Path:
    return path or Path(os.environ.get("HUB_CONFIG", "config.yaml"))


def _load(path: Path | None) -> tuple[HubConfig, Any]:
    from hub.registry import Registry

    registry = Registry.discover()
    p = _config_path(path)
    try:
        return load_config(p, registry), registry
    except ConfigError as err:
        _print_problems(f"{p}: configuration is invalid", err)
        raise typer.Exit(2) from None


def _print_problems(title: str, err: ConfigError | MappingError) -> None:
    console.print(f"[bold red]{title}[/] ({len(err.problems)} problem{'s' if len(err.problems) != 1 else ''})")
    for p in err.problems:
        console.print(f"  • {p}", markup=False, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"hub {version('aftersales-hub')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="print the version and exit")] = False) -> None:
    """After-sales channel hub."""


@app.command("check-config")
def check_config(path: Annotated[Path | None, typer.Argument(help="config file to check (or -c)")] = None,
                 config: ConfigPath = None) -> None:
    """Validate a config file (and the mappings it names) without starting; non-zero on error."""
    from hub.daemon import compile_mappings

    path = _config_path(path or config)
    cfg, registry = _load(path)
    _, problems = compile_mappings(cfg, registry)
    unavailable = registry.unavailable(cfg)
    if problems:
        _print_problems(f"{path}: mappings are invalid", MappingError(problems))
        raise typer.Exit(2)
    out.print(f"[green]{path}: OK[/] — {len(cfg.sources)} sources, {len(cfg.destinations)} destinations, "
              f"{len(cfg.sync)} sync rules")
    out.print("bounds (each keeps one client, event or destination from growing or stalling the hub):",
              soft_wrap=True)
    for key, value, given in bounds(cfg):
        out.print(f"  {key:40} {value:>10}  {'' if given else '[dim](default)[/]'}", highlight=False)
    for u in unavailable:
        out.print(f"  [yellow]note:[/] {u} (check-config accepts it; `hub run` will not start with it enabled)")


_BOUNDS = {
    "server": ("max_body_bytes", "max_pending_bytes", "inbox_timeout", "header_timeout", "body_timeout",
               "max_connections"),
    "delivery": ("lease",),
    "supervisor": ("stall_after",),
    "logging": ("repeat_limit", "repeat_window"),
}
_PER_DESTINATION = ("timeout", "max_in_flight", "slow_after", "max_response_bytes")


def bounds(cfg: HubConfig) -> list[tuple[str, str, bool]]:
    """(key path, value, set in the file?) of every bound, as check-config prints them."""
    def shown(name: str, value: Any) -> str:
        if name.endswith("bytes"):
            return f"{value / 1048576:g} MiB" if value >= 1048576 else f"{value / 1024:g} KiB"
        if isinstance(value, float):
            return f"{value:g}s"
        return str(value)

    rows = []
    for section, names in _BOUNDS.items():
        model = getattr(cfg, section)
        rows += [(f"{section}.{n}", shown(n, getattr(model, n)), n in model.model_fields_set) for n in names]
    for i, d in enumerate(cfg.destinations):
        if d.enabled:
            rows += [(f"destinations[{i}].{n} ({d.id})", shown(n, getattr(d, n)), n in d.model_fields_set)
                     for n in _PER_DESTINATION]
    return rows


@app.command()
def run(
    config: ConfigPath = None,
    role: Annotated[str | None, typer.Option(
        help="run only these roles (intake,processing,delivery) in this one process; "
             "what `hub run` gives the processes it starts")] = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (then drain and exit 0), on as many
    processes as supervisor.processes says."""
    from hub import logs
    from hub.daemon import Hub, run_until_signalled
    from hub.listener import LISTEN_FD, bind_shared
    from hub.processes import ALL, CONFIG_ERROR, become_parent, parse_roles, plan

    cfg, registry = _load(config)
    logs.configure(cfg.logging.level, cfg.logging.format, repeat_limit=cfg.logging.repeat_limit,
                   repeat_window=cfg.logging.repeat_window)
    if role is not None:
        try:
            roles = parse_roles(role)
        except ValueError as err:
            console.print(f"[red]--role:[/] {err}")
            raise typer.Exit(CONFIG_ERROR) from None
    else:
        processes = plan(cfg)
        if len(processes) > 1:
            async def migrate() -> None:
                from hub.storage import Database

                db = Database(cfg.storage.url, busy_timeout=cfg.storage.sqlite_busy_timeout)
                try:
                    await db.migrate()
                finally:
                    await db.close()

            if cfg.storage.auto_migrate:
                # Once, here: children migrating a new database at once would collide
                # on its locks; each then finds the schema at head.
                asyncio.run(migrate())
            become_parent(_config_path(config).resolve(), processes, cfg,
                          bind_shared(cfg.server.host, cfg.server.port))
        roles = ALL
    hub = Hub(cfg, registry, roles)
    # Started by the parent: intake serves the socket `hub run` bound, inherited.
    inherited = os.environ.get(LISTEN_FD)
    if role is not None and "intake" in roles and inherited and inherited.isdigit():
        hub.listen_fd = int(inherited)

    def reload_ok() -> bool:
        """The file again, checked as at start; its problems logged if any."""
        import structlog

        from hub.daemon import compile_mappings

        try:
            _, problems = compile_mappings(load_config(_config_path(config), registry), registry)
        except ConfigError as err:
            problems = err.problems
        if problems:
            structlog.get_logger("hub.cli").error(
                "reload refused: the config has problems; still running on the old one",
                problems=[str(p) for p in problems][:50])
            return False
        return True

    try:
        reload = asyncio.run(run_until_signalled(hub, reload_ok=reload_ok if role is None else None))
    except (ConfigError, MappingError) as err:
        _print_problems("cannot start", err)
        raise typer.Exit(2) from None
    except HubError as err:
        console.print(f"[bold red]cannot start:[/] {err}")
        raise typer.Exit(1) from None
    if reload:
        # Drained; the same PID starts afresh on the new file (systemd waits for its READY).
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "hub", *sys.argv[1:]])


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(help="how long to run (0 = until Ctrl-C)")] = 12.0,
    requests: Annotated[int, typer.Option(help="after-sales requests the simulated website sends")] = 8,
    keep: Annotated[bool, typer.Option("--keep", help="stay up after the summary (Ctrl-C stops): "
                                                      "click through the dashboard")] = False,
) -> None:
    """The daemon on a temporary SQLite plus simulators: watch events flow in and pushes flow out;
    ends with the dashboard's address and a token."""
    from hub.demo import run_demo

    sys.exit(asyncio.run(run_demo(seconds=seconds, requests=requests, console=out, keep=keep)))


@app.command()
def sources(config: ConfigPath = None) -> None:
    """Each configured source and, for polled ones, its health, lease and cursor."""
    from rich.table import Table

    from hub.polling import source_states
    from hub.storage import Database

    cfg, registry = _load(config)

    async def go() -> dict[str, dict[str, Any]]:
        db = Database(cfg.storage.url)
        try:
            return await source_states(db)
        finally:
            await db.close()

    states = asyncio.run(go())
    table = Table(title="sources")
    for col in ("id", "kind", "enabled", "health", "circuit", "last success", "lag", "last error", "lease"):
        table.add_column(col)
    for s in cfg.sources:
        st = states.get(s.id)
        kind = registry.sources.get(s.kind)
        polled = kind is not None and kind.poller is not None
        if st is None or "healthy" not in st:
            health = "never polled" if polled else "webhook"
            table.add_row(s.id, s.kind, str(s.enabled), health, "", "", "", "", "")
            continue
        lag = f"{st['lag_seconds']:.0f}s" if st["lag_seconds"] is not None else ""
        table.add_row(s.id, s.kind, str(s.enabled),
                      "[green]healthy[/]" if st["healthy"] else "[red]unhealthy[/]", st["circuit"],
                      str(st["last_success_at"] or ""), lag, st["last_error"] or "",
                      f"{st['lease_owner']} until {st['lease_until']}" if st["lease_owner"] else "")
    out.print(table)


@app.command()
def status(config: ConfigPath = None) -> None:
    """The hub's health at a glance: sources, the inbox and every destination's pushes."""
    from rich.table import Table

    from hub import backlog
    from hub.polling import source_states

    cfg, registry = _load(config)
    dests = [d.id for d in cfg.destinations if d.enabled]

    async def work(db: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
        return await backlog.count(db, dests), await source_states(db)

    counts, states = _with_db(config, work)
    table = Table(title="sources")
    for col in ("id", "kind", "enabled", "health", "last success", "last error"):
        table.add_column(col)
    for s in cfg.sources:
        st = states.get(s.id, {})
        kind = registry.sources.get(s.kind)
        if "healthy" in st:
            health = "[green]healthy[/]" if st["healthy"] else f"[red]unhealthy[/] ({st['circuit']})"
        else:
            health = "never polled" if kind is not None and kind.poller is not None else "webhook"
        table.add_row(s.id, s.kind, "yes" if s.enabled else "[dim]no[/]", health,
                      str(st.get("last_success_at") or ""), (st.get("last_error") or "")[:60])
    out.print(table)
    inbox = counts.inbox
    out.print(f"inbox: {inbox['pending']} pending, {inbox['quarantined']} quarantined, {inbox['done']} done",
              highlight=False)
    pushes = Table(title="destinations")
    for col in ("id", "pending", "dead", "held behind a dead letter"):
        pushes.add_column(col)
    for d, n in counts.outbox.items():
        pushes.add_row(d, str(n["pending"]), f"[red]{n['dead']}[/]" if n["dead"] else "0", str(n["held"]))
    out.print(pushes)


@db_app.command("upgrade")
def db_upgrade(config: ConfigPath = None) -> None:
    """Apply database migrations up to the newest."""
    from hub.migrate import current_revision, head_revision
    from hub.storage import Database

    cfg, _ = _load(config)

    async def go() -> tuple[str | None, str | None]:
        db = Database(cfg.storage.url)
        try:
            before = await current_revision(db)
            await db.migrate()
            return before, await current_revision(db)
        finally:
            await db.close()

    before, after = asyncio.run(go())
    out.print(f"database at {after} (head {head_revision()}; was {before or 'empty'})")


@app.command()
def export(target: Annotated[Path, typer.Argument(help="file to write: .csv or .xlsx")],
           config: ConfigPath = None,
           status: Annotated[str | None, typer.Option(help="only tickets in this status")] = None,
           channel: Annotated[str | None, typer.Option(help="only this channel")] = None,
           since: Annotated[str | None, typer.Option(help="created at or after (ISO 8601, with zone)")] = None,
           until: Annotated[str | None, typer.Option(help="created before (ISO 8601, with zone)")] = None,
           pii: Annotated[bool, typer.Option("--pii", help="contacts unmasked")] = False) -> None:
    """Tickets as a spreadsheet (CSV or XLSX), streamed: a million rows never sit in memory."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from hub import export as exports
    from hub.pii import PiiCipher

    suffix = target.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        console.print("[red]the file must end in .csv or .xlsx[/]")
        raise typer.Exit(2)

    f = exports.ExportFilter(status=status, channel=channel, since=_when(since, "since"),
                             until=_when(until, "until"))
    cfg, _ = _load(config)
    cipher = PiiCipher.from_config(cfg.security)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("exporting", total=None)

        def moved(n: int) -> None:
            bar.update(task, description=f"{n:,} tickets")

        async def work(db: Any) -> int:
            source = exports.rows(db, cipher, f, pii=pii)
            if suffix == ".csv":
                with target.open("w", encoding="utf-8", newline="") as out_file:
                    return await exports.to_csv(out_file, source, moved)
            return await exports.to_xlsx(target, source, moved)

        n = _with_db(config, work)
    out.print(f"{target}: {n:,} tickets", highlight=False)


@app.command()
def backup(target: Annotated[Path, typer.Argument(help="file to write the copy to")],
           config: ConfigPath = None) -> None:
    """A consistent copy of the SQLite database, taken while the hub runs (PostgreSQL: how)."""
    import sqlite3

    from rich.progress import BarColumn, Progress, TaskProgressColumn

    from hub import backup as backups

    cfg, _ = _load(config)
    if not cfg.storage.url.startswith("sqlite"):
        out.print(backups.postgres_advice(cfg.storage.url), highlight=False)
        return
    with Progress("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
                  console=console) as bar:
        task = bar.add_task("copying", total=None)
        try:
            size = backups.backup_sqlite(cfg.storage.url, target,
                                         lambda done, total: bar.update(task, completed=done, total=total))
        except (OSError, ValueError, RuntimeError, sqlite3.Error) as err:
            console.print(f"[red]backup failed:[/] {err}")
            raise typer.Exit(1) from None
    out.print(f"{target}: {size / 1e6:.1f} MB, integrity ok", highlight=False)


@mapping_app.command("test")
def mapping_test(
    source: Annotated[str, typer.Argument(help="a source id from the config, or a mapping name")],
    file: Annotated[Path, typer.Argument(help="sample event: the body JSON, or {\"headers\":…, \"body\":…}")],
    config: ConfigPath = None,
    mappings_dir: Annotated[Path | None, typer.Option(help="mappings folder (default: the config's, else the packaged one)")] = None,
) -> None:
    """Normalize a sample event and print the ticket, order, customer and identities."""
    from hub.inbox import event_document
    from hub.mapping import MappingSet

    name, directory = source, mappings_dir
    cfg_path = _config_path(config)
    if cfg_path.exists() and mappings_dir is None:
        cfg, _ = _load(cfg_path)
        directory = Path(cfg.mappings_dir) if cfg.mappings_dir else None
        src = cfg.source(source)
        if src is not None:
            name = src.mapping_name
    try:
        mapping = MappingSet(directory).inbound(name)
    except MappingError as err:
        _print_problems(f"mapping {name!r} is invalid", err)
        raise typer.Exit(2) from None
    try:
        sample = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        console.print(f"[red]cannot read {file}:[/] {err}")
        raise typer.Exit(2) from None
    if isinstance(sample, dict) and set(sample) <= {"headers", "body"} and "body" in sample:
        headers, body = {k.lower(): v for k, v in (sample.get("headers") or {}).items()}, sample["body"]
    else:
        headers, body = {}, sample
    doc = event_document(source, headers, body)
    try:
        normalized = mapping.apply(doc)
    except Quarantine as err:
        console.print(f"[bold red]would be quarantined:[/] {err}")
        raise typer.Exit(1) from None
    try:
        dedupe: str | None = mapping.dedupe_key(doc)
    except Quarantine:
        dedupe = None
    result = {"mapping": mapping.label, "dedupe_key": dedupe, "ticket": normalized.ticket,
              "order": normalized.order, "customer": normalized.customer,
              "identities": [{"kind": k, "value": v} for k, v in normalized.identities]}
    out.print_json(json.dumps(result, default=str, ensure_ascii=False))


def _when(text: str | None, name: str) -> Any:
    """An option's ISO 8601 time (with a zone), or exit 2 saying what is wanted."""
    from hub.views import parse_iso

    if text is None:
        return None
    value = parse_iso(text)
    if value is None or value.tzinfo is None:
        console.print(f"[red]--{name}: an ISO 8601 time with a zone, e.g. 2026-11-11T00:00:00+08:00[/]")
        raise typer.Exit(2)
    return value


@app.command()
def backfill(
    source: Annotated[str, typer.Argument(help="a polled source's id")],
    since: Annotated[str, typer.Option(help="read again from this time (ISO 8601 with zone) up to now")],
    config: ConfigPath = None,
    wait: Annotated[bool, typer.Option(help="wait and show progress (Ctrl-C leaves it running)")] = True,
) -> None:
    """Read a polled source again from a past time: the running hub does it beside the live poll;
    what is already stored is dropped by its dedupe key, so only what is missing is added."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from hub import polling
    from hub.records import utcnow

    cfg, registry = _load(config)
    since_at = _when(since, "since")
    found = next((s for s in cfg.sources if s.id == source), None)
    if found is None or not found.enabled:
        console.print(f"[red]no enabled source {source!r} in the config[/]")
        raise typer.Exit(2)
    kind = registry.sources[found.kind]
    if kind.poller is None:
        console.print(f"[red]{source} is a webhook source: the platform pushes; ask it to redeliver[/]")
        raise typer.Exit(2)
    if since_at >= utcnow():
        console.print("[red]--since must be in the past[/]")
        raise typer.Exit(2)
    streams = asyncio.run(polling.backfillable(kind.poller, found))
    if not streams:
        console.print(f"[red]{source} has no stream that can be read from a past time[/]")
        raise typer.Exit(2)
    _with_db(config, lambda db: polling.request_backfill(db, source, streams, since_at, actor=_actor()))
    out.print(f"backfill of {source} ({', '.join(streams)}) from {since_at.isoformat()} asked for; "
              "the process polling it reads it beside the live poll")
    if not wait:
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("waiting for the hub to start on it", total=None)
        while True:
            left = _with_db(config, lambda db: polling.backfills(db, source))
            if not left:
                break
            bar.update(task, description="read up to " + ", ".join(
                f"{name}: {(c or {}).get('since', '?')}" for name, c in sorted(left.items())))
            time.sleep(1)
    out.print(f"backfill of {source} done: read up to now")


@app.command()
def replay(
    config: ConfigPath = None,
    source: Annotated[str | None, typer.Option(help="only this source's tickets and events")] = None,
    since: Annotated[str | None, typer.Option(help="tickets created (events received) at or after, ISO 8601")] = None,
    until: Annotated[str | None, typer.Option(help="tickets created (events received) before, ISO 8601")] = None,
    ticket: Annotated[list[int] | None, typer.Option(help="only these tickets (repeat the option)")] = None,
    quarantined: Annotated[bool, typer.Option("--quarantined", help="also retry quarantined events")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
    show: Annotated[int, typer.Option(help="at most this many changes listed")] = 50,
) -> None:
    """Re-map stored raw events with the mappings as they are now: shows the diff, applies it on
    confirmation; each changed ticket's ticket.updated push goes out once."""
    from rich.progress import Progress, SpinnerColumn, TextColumn
    from rich.table import Table

    from hub import replay as replays
    from hub.daemon import build_runtimes
    from hub.pii import PiiCipher, mask_contacts_in

    cfg, registry = _load(config)
    try:
        sources, destinations = build_runtimes(cfg, registry)
    except MappingError as err:
        _print_problems("the mappings do not compile", err)
        raise typer.Exit(2) from None
    cipher = PiiCipher.from_config(cfg.security)
    scope = replays.Scope(source=source, since=_when(since, "since"), until=_when(until, "until"),
                          ticket_ids=tuple(ticket or ()), quarantined=quarantined)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("mapping stored events again", total=None)
        planned = _with_db(config, lambda db: replays.plan(
            db, cipher, sources, list(cfg.sync), scope,
            lambda n: bar.update(task, description=f"{n:,} tickets looked at")))

    def shown(value: Any) -> str:
        text = "∅" if value is None else mask_contacts_in(str(value))
        return text if len(text) <= 60 else text[:59] + "…"

    table = Table(title=f"tickets that change ({len(planned.tickets)} of {planned.examined:,} looked at)")
    for col in ("ticket", "source / id", "field", "now", "after", "pushes to"):
        table.add_column(col)
    for d in planned.tickets[:show]:
        for i, (name, (before, after)) in enumerate(sorted(d.changes.items())):
            table.add_row(str(d.ticket_id) if i == 0 else "", f"{d.source_id} {d.external_id}" if i == 0 else "",
                          name, shown(before), shown(after), (", ".join(d.destinations) or "–") if i == 0 else "")
    out.print(table)
    if len(planned.tickets) > show:
        out.print(f"… and {len(planned.tickets) - show:,} more (--show N lists more)")
    if planned.unmappable:
        out.print(f"[yellow]{planned.unmappable:,} tickets whose events the mappings now refuse: left as they are[/]")
    retried = [r for r in planned.requeue if r.outcome.startswith(("maps", "ignored"))]
    if quarantined:
        q = Table(title=f"quarantined events ({len(retried)} of {len(planned.requeue)} would now go through)")
        for col in ("raw event", "source", "was", "now"):
            q.add_column(col)
        for r in planned.requeue[:show]:
            q.add_row(str(r.raw_event_id), r.source_id, shown(r.reason), shown(r.outcome))
        out.print(q)
    if not planned.tickets and not retried:
        out.print("nothing to replay: the mappings make of the stored events what the tickets already hold")
        return
    if not yes and not typer.confirm(f"apply to {len(planned.tickets):,} tickets and requeue {len(retried):,} "
                                     "events?", default=False):
        out.print("nothing changed")
        return
    labels = {sid: rt.mapping.label for sid, rt in sources.items()}
    done = _with_db(config, lambda db: replays.apply(db, cipher, destinations, list(cfg.sync), planned,
                                                     actor=_actor(), mapping_labels=labels))
    out.print(f"replay {done.replay_id}: {done.tickets:,} tickets updated, {done.pushes:,} pushes queued, "
              f"{done.requeued:,} events requeued")
    if done.skipped:
        out.print(f"[yellow]{len(done.skipped):,} tickets changed since the plan and were left alone "
                  f"(run the replay again): {', '.join(map(str, done.skipped[:20]))}[/]")


def _with_db(config: Path | None, work: Any) -> Any:
    from hub.storage import Database

    cfg, _ = _load(config)

    async def go() -> Any:
        db = Database(cfg.storage.url)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


def _actor() -> str:
    return f"cli:{os.environ.get('SUDO_USER') or os.environ.get('USER') or 'unknown'}"


@tickets_app.command("show")
def tickets_show(ticket_id: Annotated[int, typer.Argument(help="ticket id")], config: ConfigPath = None,
                 pii: Annotated[bool, typer.Option("--pii", help="show contacts unmasked")] = False) -> None:
    """A ticket with its order, customer, timeline, raw events and pushes."""
    from rich.table import Table

    from hub.admin.queries import ticket_detail
    from hub.pii import PiiCipher

    cfg, _ = _load(config)
    cipher = PiiCipher.from_config(cfg.security)
    found = _with_db(config, lambda db: ticket_detail(db, cipher, ticket_id, pii=pii))
    if found is None:
        console.print(f"[red]no ticket {ticket_id}[/]")
        raise typer.Exit(1)
    t, c, o = found["ticket"], found["customer"], found["order"]
    out.print(f"[bold]ticket {t['id']}[/] {t['channel']}/{t['source_id']} {t['external_id']} — "
              f"{t['type']}, [bold]{t['status']}[/], refund {_yuan(t['refund_amount'])}", highlight=False)
    if o:
        out.print(f"order {o['external_id']} ({o['channel']}), paid {_yuan(o['paid_amount'])}", highlight=False)
    if c:
        out.print(f"customer {c['id']}: {c['display_name'] or ''} {c['phone'] or ''} {c['email'] or ''}",
                  highlight=False)
    timeline = Table(title="timeline")
    for col in ("at", "kind", "from", "to", "raw event"):
        timeline.add_column(col)
    for e in found["timeline"]:
        timeline.add_row(e["at"], e["kind"], e["from"] or "", e["to"] or "", str(e["raw_event_id"] or ""))
    out.print(timeline)
    pushes = Table(title="pushes")
    for col in ("id", "destination", "event", "state", "attempts", "last status", "last error"):
        pushes.add_column(col)
    for p in found["pushes"]:
        pushes.add_row(str(p["id"]), p["destination_id"], p["event_type"], p["state"], str(p["attempts"]),
                       str(p["last_status"] or ""), (p["last_error"] or "")[:60])
    out.print(pushes)


def _yuan(fen: int | None) -> str:
    return "—" if fen is None else f"¥{fen / 100:.2f}"


@dlq_app.command("list")
def dlq_list(
    config: ConfigPath = None,
    destination: Annotated[str | None, typer.Option(help="only this destination")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
) -> None:
    """Dead pushes, oldest first, with how many later pushes each holds back."""
    from rich.table import Table

    from hub.dead_letters import list_dead

    dead = _with_db(config, lambda db: list_dead(db, destination, limit))
    table = Table(title=f"dead letters ({len(dead)})")
    for col in ("id", "destination", "ticket", "event", "attempts", "status", "error", "holds"):
        table.add_column(col)
    for d in dead:
        table.add_row(str(d.id), d.destination_id, str(d.ticket_id), d.event_type, str(d.attempts),
                      str(d.last_status or ""), (d.last_error or "")[:80], str(d.held))
    out.print(table)


@dlq_app.command("retry")
def dlq_retry(ids: Annotated[list[int], typer.Argument(help="outbox ids (from `hub dlq list`)")],
              config: ConfigPath = None) -> None:
    """Send dead pushes again (a running hub picks them up within a tick); the pushes behind follow."""
    from hub.dead_letters import retry

    done = _with_db(config, lambda db: retry(db, ids, actor=_actor()))
    _report("retried", ids, done)


@dlq_app.command("drop")
def dlq_drop(ids: Annotated[list[int], typer.Argument(help="outbox ids (from `hub dlq list`)")],
             reason: Annotated[str, typer.Option(help="why: kept in the timeline and the audit log")],
             config: ConfigPath = None) -> None:
    """Give up on dead pushes for good; the ticket's later pushes go on without them."""
    from hub.dead_letters import drop

    done = _with_db(config, lambda db: drop(db, ids, actor=_actor(), reason=reason))
    _report("dropped", ids, done)


def _report(what: str, asked: list[int], done: list[int]) -> None:
    out.print(f"{what}: {', '.join(map(str, done)) or 'none'}")
    missing = sorted(set(asked) - set(done))
    if missing:
        console.print(f"[yellow]not dead letters (already retried, dropped or unknown):[/] "
                      f"{', '.join(map(str, missing))}")
        raise typer.Exit(1)


def main() -> None:
    app()
