"""The listening socket: a bounded number of connections, slow clients closed.

aiohttp serves each connection with its own request handler (an asyncio
protocol). The hub opens the socket itself and hands every accepted
connection to that handler through :class:`_Counted`, which counts what is
open: one connection past ``server.max_connections`` is answered 503 and
closed before any of its bytes are read, so a flood of idle sockets cannot
exhaust file descriptors or memory while real requests wait.

A client that opens a connection and sends its request head slowly (or not
at all) is closed ``server.header_timeout`` after it connected or after its
last answer — aiohttp's keep-alive timer, which runs from the moment a
connection opens. A body that does not arrive in time is the handler's
business (``server.body_timeout``, 408).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("hub.listener")

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: 83\r\n\r\n"
         b'{"error": "too_many_connections", "message": "the hub is at its connection limit"}\n')


# asyncio reads up to 256 KiB per recv(); a request refused unread (503, past
# the intake budget) would still have that much of its body in memory until
# its connection closes, times every connection at once.
READ_CHUNK = 16 * 1024


class ConnectionLimit:
    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None):
        self.limit = limit
        self.open = 0
        self.on_refused = on_refused


class _Counted(asyncio.Protocol):
    """One connection: handed to aiohttp's handler unless the limit is reached."""

    def __init__(self, make_handler: Callable[[], Any], limit: ConnectionLimit):
        self._make = make_handler
        self._limit = limit
        self._inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._limit.open >= self._limit.limit:
            if self._limit.on_refused is not None:
                self._limit.on_refused()
            assert isinstance(transport, asyncio.Transport)
            transport.write(_BUSY)
            transport.close()
            return
        self._limit.open += 1
        if hasattr(transport, "max_size"):
            transport.max_size = READ_CHUNK
        self._inner = self._make()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._limit.open -= 1
            self._inner.connection_lost(exc)
            self._inner = None

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


BACKLOG = 1024
LISTEN_FD = "HUB_LISTEN_FD"  # the listening socket a child inherits from the parent


def bind_shared(host: str, port: int) -> socket.socket:
    """The one listening socket every intake process of ``hub run`` serves,
    bound before the processes start and inherited by each (see hub.processes).
    One socket, one accept queue: a process replaced by a reload closes only its
    copy, so no connection waiting to be accepted is ever reset — which
    per-process ``SO_REUSEPORT`` sockets cannot promise (a closed one drops its queue)."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    # Bound, not listening: connections are refused (not queued unanswered) until the
    # first intake process is ready and listens on it (asyncio's create_server does).
    sock.set_inheritable(True)
    return sock


async def listen(make_handler: Callable[[], Any], host: str, port: int, limit: ConnectionLimit,
                 *, backlog: int = BACKLOG, inherited: int | None = None) -> asyncio.Server:
    """Listen on ``host:port`` — or serve the inherited listening socket
    ``inherited`` — each connection served by ``make_handler()`` (aiohttp's
    ``runner.server``) while fewer than ``limit.limit`` are open."""
    loop = asyncio.get_running_loop()
    if inherited is not None:
        sock = socket.socket(fileno=os.dup(inherited))  # our copy; the parent keeps its own
        sock.setblocking(False)
        return await loop.create_server(lambda: _Counted(make_handler, limit), sock=sock, backlog=backlog)
    return await loop.create_server(lambda: _Counted(make_handler, limit), host, port,
                                    backlog=backlog, reuse_address=True, family=socket.AF_UNSPEC)
