"""``hub run`` on every core: the process plan and the parent that keeps it running.

What a hub process does is a set of *roles*: ``intake`` (the HTTP server, the
inbox writer, the pollers), ``processing`` (the pipeline) and ``delivery``
(pushes). One process may hold all three — ``supervisor.processes: 1``, and
what tests run in-process.

How they are spread (:func:`plan`) depends on the database:

- **PostgreSQL**: every process holds every role. They share the listening
  socket (bound once by ``hub run``, inherited by each: one accept queue, so
  a process replaced or restarted never resets a waiting connection), the inbox and the
  outbox (claims ``FOR UPDATE SKIP LOCKED``) and the poll leases (one process
  polls a source at a time; a survivor takes the lease when its holder dies).
  More processes on more machines against one PostgreSQL is how a merchant
  scales out; ``auto`` is one per core.
- **SQLite**: one file has one writer at a time. Three processes, one role
  each: intake, the pipeline and delivery. Each holds the write lock only
  for its own short transactions — the pipeline plans its batches on a read
  snapshot and renders every value before it takes the lock — and each has
  an interpreter (a GIL) of its own. Measured on 2 cores (15,000 requests
  at 64 connections, interleaved runs): 1,830–1,940 tickets/s and 670–700 µs
  of the hub's CPU a ticket, against 1,460–1,580 tickets/s and 760–830 µs
  with intake and delivery sharing a process, whose event loop — answering
  the platforms and running the pushes — was then busy 90 % of the time and
  whose two threads took turns on one GIL.
  More would only queue on the one write lock: SQLite takes three for
  ``auto`` (two cores or more) and for any number above two; ``2`` keeps
  intake and delivery in one process, ``1`` runs everything in one. Delivery,
  like the pipeline, never runs in two processes at once on SQLite: a
  delivery process takes back the claims it finds at start, so on reload the
  old one drains before the new one starts.

``hub run`` checks the config and migrates the database, then becomes the
parent by exec'ing ``python -m hub.processes`` in its place: the same PID
(systemd's main process) without the CLI's libraries (typer, click, rich,
Alembic). The parent imports what a child runs (:func:`preload`), freezes
it out of the garbage collector's reach, and **forks** each child, which
then runs :func:`hub.child.main` (what ``hub run --role …`` does) with the
same config, read afresh. The imported code and its objects are then one
copy in memory, shared by every process until one writes to a page: on a
150,000-event burst the hub's processes took 228 MB summed PSS, against 327
MB when each child was a fresh interpreter importing the hub for itself
(each held ~75 MB of its own). A child names its roles in ``ps``
(``hub: processing (/etc/hub/config.yaml)``). Because the code was imported
once, a new version of the hub's code takes a restart, not a reload.
The parent and its children speak the systemd notify protocol on both sides:
each child notifies a socket the parent owns (READY, WATCHDOG, STATUS,
STOPPING, exactly as it would systemd), and the parent tells systemd READY
once every child is ready and WATCHDOG only while every child keeps pinging.
Those sockets (and :mod:`hub.wake`'s) live in a directory of the parent's
in the temp dir; one that a killed parent left is removed by the next
(:func:`sweep_socket_dirs`).
A child that exits is restarted after a backoff (a config error ends it all:
restarting would not help); SIGTERM is passed to every child, which drains,
and the parent exits 0 once all have.

**SIGHUP reloads.** The parent checks the file as ``hub check-config`` does
(in a subprocess, so that a broken file cannot harm the parent); a file that does
not pass is refused with its problems in the log and everything keeps
running on the old one. One that passes: the parent tells systemd RELOADING,
then replaces the children one by one — a new one started and READY before
the old one is told to drain (they serve the same socket meanwhile), except a role
that must never run twice at once (SQLite's pipeline: ``exclusive``), whose
old process drains first — and tells systemd READY again. No request or
event in flight is dropped: each old process finishes what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import setproctitle
import structlog

from hub import systemd
from hub.listener import LISTEN_FD
from hub.wake import ENV as WAKE_DIR

if TYPE_CHECKING:
    from hub.config import HubConfig

log = structlog.get_logger("hub.processes")

ROLES = ("intake", "processing", "delivery")
ALL = frozenset(ROLES)
CONFIG_ERROR = 2  # a child's exit code when its config cannot run: restarting would not help


def parse_roles(text: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = roles - ALL
    if unknown or not roles:
        raise ValueError(f"roles are {', '.join(ROLES)}; got {text!r}")
    return roles


def cores_for(roles: frozenset[str], affinity: Mapping[Any, list[int]]) -> set[int] | None:
    """The cores a process of ``roles`` runs on (``supervisor.cpu_affinity``): those
    of its roles when each of them is listed, else None — the kernel places it."""
    if not all(r in affinity for r in roles):
        return None
    return {c for r in roles for c in affinity[r]}


def pin(roles: frozenset[str], affinity: Mapping[Any, list[int]]) -> str | None:
    """Keep this process (and the threads it will start) on its roles' cores.
    A problem, said for the log, when the machine has no such core: the process
    then runs where the kernel puts it rather than not at all."""
    cores = cores_for(roles, affinity)
    if cores is None:
        return None
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError) as err:
        return f"supervisor.cpu_affinity: cannot keep {describe(roles)} on cores {sorted(cores)}: {err}"
    return None


SQLITE_PROCESSES = 3  # one per role: see the module docstring
SOCKET_DIR_PREFIX = "hub-notify-"  # the parent's directory for its children's notify and wake sockets
STALE_AFTER = 60.0  # seconds: younger socket directories are never swept (a parent may be binding)


def sweep_socket_dirs(tmp: Path, *, older_than: float = STALE_AFTER) -> list[Path]:
    """Remove the socket directories that killed parents left in ``tmp``, and
    return the ones removed.

    A parent removes its own directory when it stops, but a SIGKILL (the OOM
    killer, ``kill -9``, a container stopped hard) gives it no chance, and
    outside systemd's ``PrivateTmp`` each such start left one behind. A live
    parent keeps its children's notify sockets bound for as long as it runs,
    so a directory where no socket answers a connect is dead — judged by the
    sockets, not by a PID, which another PID namespace sharing ``/tmp`` would
    make meaningless. A socket we may not connect to belongs to someone else:
    kept."""
    removed: list[Path] = []
    now = time.time()
    for directory in tmp.glob(SOCKET_DIR_PREFIX + "*"):
        try:
            if not directory.is_dir() or now - directory.stat().st_mtime < older_than:
                continue
            if any(_bound(sock) for sock in directory.glob("*.sock")):
                continue
        except OSError:  # vanished meanwhile, or not ours to look into
            continue
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            removed.append(directory)
    return removed


def _bound(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # e.g. permission denied: another user's hub
    return True


def process_count(cfg: HubConfig, cores: int | None = None) -> int:
    wanted = cfg.supervisor.processes
    n = max(1, cores or os.cpu_count() or 1) if wanted == "auto" else int(wanted)
    if cfg.storage.url.startswith("sqlite") and n > 1:
        return 2 if n == 2 and wanted != "auto" else SQLITE_PROCESSES
    return n


def plan(cfg: HubConfig, cores: int | None = None) -> list[frozenset[str]]:
    """The roles of each process ``hub run`` starts (see the module docstring)."""
    n = process_count(cfg, cores)
    if n == 1:
        return [ALL]
    if cfg.storage.url.startswith("sqlite"):
        if n == 2:
            return [frozenset({"intake", "delivery"}), frozenset({"processing"})]
        return [frozenset({r}) for r in ROLES]
    return [ALL] * n


def describe(roles: frozenset[str]) -> str:
    return ",".join(r for r in ROLES if r in roles)


def _die_with_parent() -> None:
    """In the child, just after the fork: killed when the parent dies (a SIGKILL
    of the hub is a crash of all of it, never orphans still writing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before that took hold
            os._exit(1)


class Forked:
    """A forked child as the parent tracks it: what ``subprocess.Popen`` offers, for a fork."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Child:
    index: int
    roles: frozenset[str]
    socket_path: Path
    proc: Forked | None = None
    ready: bool = False
    last_ping: float = field(default_factory=time.monotonic)
    restarts: int = 0
    status: str = ""
    generation: int = 0  # one more with each reload
    retiring: bool = False  # being stopped by a reload: not to be restarted


class Parent:
    """Starts the planned children, relays their notifications, restarts the fallen."""

    def __init__(self, config_path: Path, roles: list[frozenset[str]], *, max_backoff: float = 30.0,
                 exclusive: frozenset[str] = frozenset(), ready_timeout: float = 120.0,
                 listen_fd: int | None = None):
        self.config_path = config_path
        self.listen_fd = listen_fd  # every intake child serves this socket (hub.listener.bind_shared)
        self.exclusive = exclusive        # roles never run by two processes at once (SQLite's pipeline, delivery)
        self.ready_timeout = ready_timeout  # a reloaded process not READY by then: the reload is abandoned
        self._reloading: asyncio.Task[None] | None = None
        self.max_backoff = max_backoff
        tmp = Path(tempfile.gettempdir())
        for stale in sweep_socket_dirs(tmp):
            log.info("removed the socket directory of a hub that was killed", path=str(stale))
        self._dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=tmp))
        self.children = [Child(i, r, self._dir / f"child-{i}.sock") for i, r in enumerate(roles)]
        self._sockets: list[socket.socket] = []
        self._stopping = False
        self._told_ready = False
        self._watchdog = systemd.watchdog_interval()
        self.exit_code = 0

    def _spawn(self, child: Child) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", LISTEN_FD)}
        env["NOTIFY_SOCKET"] = str(child.socket_path)
        env[WAKE_DIR] = str(self._dir)  # roles in different processes wake each other (hub.wake)
        if self._watchdog:
            env["WATCHDOG_USEC"] = str(int(self._watchdog * 2_000_000))
        keep = self.listen_fd if self.listen_fd is not None and "intake" in child.roles else None
        if keep is not None:
            env[LISTEN_FD] = str(keep)
        argv = ["--config", str(self.config_path), "--role", describe(child.roles)]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's event loop
            code = 1
            try:
                self._become_child(env, keep, describe(child.roles))
                from hub import child as child_main

                code = child_main.main(argv)
            except SystemExit as exit_:
                code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        child.proc = Forked(pid)
        child.ready = False
        child.last_ping = time.monotonic()
        log.info("hub process started", process=child.index, roles=describe(child.roles), pid=pid)

    def _become_child(self, env: dict[str, str], keep: int | None, roles: str) -> None:
        """Just after the fork, in the child: shed what was the parent's."""
        _die_with_parent()
        signal.set_wakeup_fd(-1)  # the parent's event loop's, not ours
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in self._sockets:  # the parent's notify sockets: our copies would only hold them open
            os.close(sock.detach())
        if self.listen_fd is not None and keep is None:
            os.close(self.listen_fd)
        # The title first: setproctitle finds the space it writes into from the
        # environment as the process started, and replacing it loses that.
        setproctitle.setproctitle(f"hub: {roles} ({self.config_path})")
        os.environ.clear()
        os.environ.update(env)

    def _listen(self, child: Child) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(child.socket_path))
        sock.setblocking(False)
        self._sockets.append(sock)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._received, child, sock)

    def _received(self, child: Child, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            for line in data.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key == "READY":
                    child.ready = True
                    child.last_ping = time.monotonic()
                elif key == "WATCHDOG":
                    child.last_ping = time.monotonic()
                elif key == "STATUS":
                    child.status = value

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested)
        for child in self.children:
            self._listen(child)
            self._spawn(child)
        watcher = asyncio.create_task(self._watch())
        await stop.wait()
        self._stopping = True
        systemd.notify("STOPPING=1")
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloading
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await self._stop_children()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.exit_code

    async def _watch(self) -> None:
        """Readiness, the watchdog and restarts, a few times a second."""
        last_watchdog = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for child in self.children:
                if child.proc is None or child.retiring:
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                if code == CONFIG_ERROR and not child.ready:
                    log.error("hub process cannot start: its config cannot run", process=child.index)
                    self.exit_code = CONFIG_ERROR
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                child.restarts += 1
                backoff = min(self.max_backoff, 2.0 ** min(child.restarts - 1, 10))
                log.error("hub process exited; restarting it", process=child.index, code=code,
                          roles=describe(child.roles), restart_in=backoff, last_status=child.status or None)
                await asyncio.sleep(backoff)
                if self._stopping:
                    return
                self._spawn(child)
            if not self._told_ready and all(c.ready for c in self.children):
                self._told_ready = True
                systemd.notify("READY=1")
                log.info("hub ready", processes=len(self.children))
            if self._watchdog and self._told_ready and now - last_watchdog >= self._watchdog:
                last_watchdog = now
                # A process being restarted is not late until it is ready again.
                late = [c for c in self.children if c.ready and now - c.last_ping > 2 * self._watchdog]
                if late:
                    systemd.notify("STATUS=not pinging: " + ", ".join(f"process {c.index}" for c in late))
                else:
                    systemd.notify("WATCHDOG=1")

    # ------------------------------------------------------------ reload

    def _reload_requested(self) -> None:
        if self._stopping:
            return
        if self._reloading is not None and not self._reloading.done():
            log.warning("reload asked for while one is under way: ignored")
            return
        self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "check-config", "-c", str(self.config_path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await check.communicate()
        if check.returncode != 0:
            problems = [line.strip(" •") for line in err.decode(errors="replace").splitlines() if "•" in line]
            log.error("reload refused: the config does not pass check-config; still running on the old one",
                      problems=problems[:50])
            systemd.notify("STATUS=reload refused: the config has problems (see the log)")
            return
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        log.info("reloading: replacing every hub process", processes=len(self.children))
        for i, old in enumerate(list(self.children)):
            if self._stopping:
                return
            new = Child(old.index, old.roles, self._dir / f"child-{old.index}-{old.generation + 1}.sock",
                        generation=old.generation + 1)
            self._listen(new)
            if old.roles & self.exclusive:
                old.retiring = True
                await self._stop([old])
                self._spawn(new)
                self.children[i] = new
                await self._until_ready(new)
            else:
                self._spawn(new)
                if not await self._until_ready(new):
                    await self._stop([new])
                    log.error("reload abandoned: a new process did not become ready; the old ones go on",
                              process=new.index, timeout=self.ready_timeout)
                    systemd.notify("READY=1\nSTATUS=reload abandoned (see the log)")
                    return
                self.children[i] = new
                await self._stop([old])
        systemd.notify("READY=1\nSTATUS=reloaded")
        log.info("reloaded", processes=len(self.children))

    async def _until_ready(self, child: Child) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while not child.ready:
            if time.monotonic() > deadline or (child.proc is not None and child.proc.poll() is not None):
                return False
            await asyncio.sleep(0.05)
        return True

    async def _stop(self, children: list[Child], grace: float = 120.0) -> None:
        """SIGTERM (each drains what it holds), then wait; killed past ``grace``."""
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            assert child.proc is not None
            # A child's exit raises no event here: poll, as Popen.wait(timeout) does.
            while child.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if child.proc.poll() is None:
                log.error("hub process did not stop in time; killing it", process=child.index)
                child.proc.kill()
                child.proc.wait()

    async def _stop_children(self, grace: float = 120.0) -> None:
        # One already gone (killed, waiting out its restart backoff) has been
        # logged as it fell; what the exit code reports is whether the ones
        # running now drain cleanly.
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        await self._stop(running, grace)
        failed = [c for c in running if c.proc is not None and c.proc.returncode not in (0, -signal.SIGTERM)]
        for child in failed:
            assert child.proc is not None
            log.error("hub process did not stop cleanly", process=child.index, roles=describe(child.roles),
                      code=child.proc.returncode, last_status=child.status or None)
        if self.exit_code == 0 and failed:
            self.exit_code = 1


def become_parent(config_path: Path, roles: list[frozenset[str]], cfg: HubConfig,
                  listening: socket.socket) -> None:
    """Replace this process (``hub run``, config checked, schema migrated, the
    port bound) with the lightweight parent: same PID, same environment
    (NOTIFY_SOCKET), the listening socket kept open across the exec."""
    exclusive = ""
    if cfg.storage.url.startswith("sqlite"):
        # Delivery alone in its process drains before its successor starts. Beside
        # intake it cannot (the port would go unserved meanwhile): the successor
        # takes back the claims in flight, and their late outcomes are fenced off.
        exclusive = "processing" if any("intake" in r and "delivery" in r for r in roles) else "processing,delivery"
    argv = [sys.executable, "-m", "hub.processes", "--config", str(config_path), "--exclusive", exclusive,
            "--listen-fd", str(listening.fileno()),
            "--max-backoff", str(cfg.supervisor.max_backoff), "--log-level", cfg.logging.level,
            "--log-format", cfg.logging.format, "--repeat-limit", str(cfg.logging.repeat_limit),
            "--repeat-window", str(cfg.logging.repeat_window),
            "--storage", "sqlite" if cfg.storage.url.startswith("sqlite") else "postgresql",
            "--plan", ";".join(describe(r) for r in roles)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def preload(storage: str) -> None:
    """Import, once and before any child is forked, what every child runs.

    Forked children share these pages with the parent and each other until
    one of them writes to a page; ``gc.freeze`` keeps the collector from
    writing into every object it would otherwise scan (each scan dirties the
    page, and the page is then copied)."""
    import hub.child  # noqa: F401
    import hub.daemon  # noqa: F401
    from hub.registry import Registry

    Registry.discover()
    if storage == "sqlite":
        import sqlalchemy.dialects.sqlite.aiosqlite  # noqa: F401
    else:
        import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """``python -m hub.processes``: the parent, as :func:`become_parent` starts it."""
    import argparse

    from hub import logs

    ap = argparse.ArgumentParser(prog="hub.processes")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--plan", required=True, help="roles of each child: intake,delivery;processing")
    ap.add_argument("--max-backoff", type=float, default=30.0)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--log-format", default="json")
    ap.add_argument("--exclusive", default="", help="roles never run twice at once: processing and delivery on SQLite")
    ap.add_argument("--repeat-limit", type=int, default=20)
    ap.add_argument("--repeat-window", type=float, default=60.0)
    ap.add_argument("--listen-fd", type=int, default=None, help="the listening socket, bound by hub run")
    ap.add_argument("--storage", choices=("sqlite", "postgresql"), default="sqlite",
                    help="which database driver the children will load: preloaded with the rest")
    args = ap.parse_args(argv)
    preload(args.storage)
    logs.configure(args.log_level, args.log_format, repeat_limit=args.repeat_limit,
                   repeat_window=args.repeat_window)
    roles = [parse_roles(part) for part in args.plan.split(";")]
    exclusive = parse_roles(args.exclusive) if args.exclusive else frozenset()
    return asyncio.run(Parent(args.config, roles, max_backoff=args.max_backoff, exclusive=exclusive,
                              listen_fd=args.listen_fd).run())


if __name__ == "__main__":
    sys.exit(main())
