"""A parent killed with SIGKILL leaves its socket directory; the next one removes it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from hub import processes
from hub.processes import SOCKET_DIR_PREFIX, STALE_AFTER, Parent, sweep_socket_dirs


def _socket_dir(tmp: Path, name: str, *, bound: bool, age: float) -> tuple[Path, socket.socket]:
    """A parent's directory with one child socket: still bound (a live parent) or
    only its file left (the parent is gone); its mtime ``age`` seconds ago."""
    directory = tmp / f"{SOCKET_DIR_PREFIX}{name}"
    directory.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "child-0.sock"))
    if not bound:
        sock.close()  # the file stays, as after a SIGKILL
    then = time.time() - age
    os.utime(directory, (then, then))
    return directory, sock


def test_only_old_directories_whose_sockets_answer_no_one_are_removed(tmp_path: Path) -> None:
    dead, s1 = _socket_dir(tmp_path, "dead", bound=False, age=STALE_AFTER + 600)
    live, s2 = _socket_dir(tmp_path, "live", bound=True, age=STALE_AFTER + 600)
    young, s3 = _socket_dir(tmp_path, "young", bound=False, age=1)
    empty = tmp_path / f"{SOCKET_DIR_PREFIX}empty"
    empty.mkdir()
    os.utime(empty, (time.time() - STALE_AFTER - 5,) * 2)
    other = tmp_path / "someone-elses"
    other.mkdir()
    os.utime(other, (time.time() - STALE_AFTER - 5,) * 2)
    try:
        removed = sweep_socket_dirs(tmp_path)
        assert sorted(removed) == sorted([dead, empty])
        assert not dead.exists() and not empty.exists()
        assert live.exists() and young.exists() and other.exists()
        # The live parent's socket still works after the sweep.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"WATCHDOG=1", str(live / "child-0.sock"))
        assert s2.recv(100) == b"WATCHDOG=1"
    finally:
        for s in (s1, s2, s3):
            s.close()


def test_a_new_parent_sweeps_before_it_makes_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes.tempfile, "tempdir", str(tmp_path))
    dead, s = _socket_dir(tmp_path, "killed", bound=False, age=STALE_AFTER + 1)
    s.close()
    parent = Parent(tmp_path / "config.yaml", [processes.ALL])
    assert not dead.exists()
    assert parent._dir.parent == tmp_path and parent._dir.name.startswith(SOCKET_DIR_PREFIX)
    assert [p.name for p in tmp_path.iterdir()] == [parent._dir.name]
