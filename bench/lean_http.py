"""HTTP/1.1 for the benchmarks' own load generator and downstream stand-in.

The benchmarks run the platforms' senders and the merchant's systems on the
same two cores as the hub, where in production they run on machines of
their own. Through aiohttp each of those costs ~170-240 µs of CPU a request
(measured with bench/e2e.py: the sender 236 µs and the receiver 166 µs a
ticket, beside the hub's ~1,000 µs) — cores the hub then does not have. So
the bench's side of each hop speaks HTTP/1.1 here directly: keep-alive
connections, ``Content-Length`` bodies, one request at a time per
connection, which is all the hub's client and server use with each other.
This is bench machinery only: the hub itself serves and sends with aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

Headers = dict[str, str]
# (method, path, lower-cased headers, body) → (status, body), or an awaitable of it
Handler = Callable[[str, str, Headers, bytes], "tuple[int, bytes] | Awaitable[tuple[int, bytes]]"]

_REASONS = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found", 400: b"Bad Request"}


class _ServerConnection(asyncio.Protocol):
    """One keep-alive connection: requests parsed from the buffer, answered in order."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a handler's answer is awaited: later bytes wait in the buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _next(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            answer = self.handler(method, path, headers, body)
            if isinstance(answer, tuple):
                self._reply(*answer, close=headers.get("connection") == "close")
            else:
                self.busy = True
                task = asyncio.ensure_future(answer)
                task.add_done_callback(lambda t, c=headers.get("connection") == "close": self._later(t, c))

    def _later(self, task: asyncio.Future[tuple[int, bytes]], close: bool) -> None:
        self.busy = False
        if not task.cancelled() and task.exception() is None:
            self._reply(*task.result(), close=close)
        self._next()

    def _reply(self, status: int, body: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (status, _REASONS.get(status, b"-"), len(body),
                                b"Connection: close\r\n" if close else b"", body))
        if close:
            self.transport.close()


async def serve(host: str, port: int, handler: Handler) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ServerConnection(handler), host, port, reuse_address=True,
                                    backlog=1024)


class Client:
    """POSTs to one host over keep-alive connections: a free one is reused, a new
    one opened when none is free (as aiohttp's connector with no limit does)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._free: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def post(self, path: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
        """(status, body). Raises OSError / asyncio.IncompleteReadError when the connection fails."""
        reader, writer = self._free.popleft() if self._free else await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n%s\r\n%s" % (
                path.encode(), self._host_header, len(body),
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode(), body))
            status_line = await reader.readline()
            status = int(status_line.split(b" ", 2)[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            answer = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._free.append((reader, writer))
        return status, answer

    async def close(self) -> None:
        while self._free:
            _, writer = self._free.popleft()
            writer.close()
