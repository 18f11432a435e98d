"""Wake-ups between the hub's processes: "there is new work for your role".

On SQLite the roles run in processes of their own (:mod:`hub.processes`),
and a process is not woken by the work another one hands it: the pipeline
would learn of a committed request only at its next poll (``pipeline.poll``),
delivery of a committed push at its own (``delivery.poll``): latency on
every ticket, or — polled often — CPU spent idling (~2 ms a look: every
20 ms kept an idle delivery process at 12 % of a core). So the parent gives its
children a directory (``HUB_WAKE_DIR``); a process holding a role binds a
Unix datagram socket there named for it, and a process that has just
committed work for that role sends it one byte.

A wake-up is a hint, never the only way work is found: it is sent without
waiting and dropped when nobody listens or the socket's queue is full, and
the polls stay as they were. Losing one costs a poll's wait, not an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("hub.wake")

ENV = "HUB_WAKE_DIR"


def _path(directory: str, role: str) -> str:
    return str(Path(directory) / f"wake-{role}.sock")


class WakeSender:
    """Wakes the process holding ``role``, if there is one (one byte, never blocking)."""

    def __init__(self, role: str, directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(ENV)
        self._path = _path(directory, role) if directory else None
        self._sock: socket.socket | None = None
        if self._path is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def __call__(self) -> None:
        if self._sock is None or self._path is None:
            return
        # Nobody listening yet (restarting), or its queue full (it is awake anyway).
        with contextlib.suppress(OSError):
            self._sock.sendto(b"w", self._path)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_wake: Callable[[], None]):
        self.on_wake = on_wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_wake()


class WakeListener:
    """Calls ``on_wake`` in the event loop whenever the socket for ``role`` gets a byte."""

    def __init__(self, role: str, on_wake: Callable[[], None], directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(ENV)
        self._path = _path(directory, role) if directory else None
        self._on_wake = on_wake
        self._transport: asyncio.DatagramTransport | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        if self._path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # left by a predecessor that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self._path)
        except OSError as err:  # e.g. a path past the 107 bytes a socket's name may have
            sock.close()
            log.warning("no wake-ups between processes: polling only", path=self._path, error=str(err))
            return
        self._inode = os.stat(self._path).st_ino
        sock.setblocking(False)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(self._on_wake), sock=sock)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            # Only our own: a successor started before we drained (a reload) has bound anew.
            with contextlib.suppress(OSError):
                if self._path is not None and os.stat(self._path).st_ino == self._inode:
                    os.unlink(self._path)
