"""A downstream system for the end-to-end benchmark, in a process of its own so
it takes no CPU from the bench's sender, speaking HTTP/1.1 through
bench/lean_http.py (it shares the hub's cores): verifies each push's Standard
Webhooks signature, records when each webhook-id arrived, and can be told to
sit on a share of first attempts (a destination that hangs on some pushes).

    python bench/push_receiver.py PORT SECRET [--hang-fraction 0.01] [--hang-seconds 30]

``GET /count`` answers ``{"answered": N, "attempts": M, "first": t, "last": t}`` (cheap,
for big runs; ``first``/``last``: when the first and the latest push got their 200);
``GET /arrivals`` answers ``{webhook-id: [ticket external id, first arrival, attempts,
answered]}`` (unix seconds; ``answered``: when an attempt got its 200, None while none has).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import time
from typing import Any

import orjson

from bench import lean_http
from hub import standard_webhooks
from hub.errors import VerificationError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("secret")
    ap.add_argument("--hang-fraction", type=float, default=0.0)
    ap.add_argument("--hang-seconds", type=float, default=30.0)
    args = ap.parse_args()
    key = standard_webhooks.decode_secret(args.secret)
    arrivals: dict[str, list[object]] = {}
    cut = int(args.hang_fraction * 10_000)
    totals = {"answered": 0, "attempts": 0}
    stamps: dict[str, float | None] = {"first": None, "last": None}
    ok = orjson.dumps({"ok": True})

    async def hang() -> tuple[int, bytes]:
        await asyncio.sleep(args.hang_seconds)
        return 200, ok  # long after the hub gave up on it

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if method == "GET":
            if path == "/count":
                return 200, orjson.dumps({**totals, **stamps})
            if path == "/arrivals":
                return 200, orjson.dumps(arrivals)
            return 404, b"{}"
        try:
            msg_id = standard_webhooks.verify([key], headers, body)
        except VerificationError as err:
            return 401, orjson.dumps({"error": str(err)})
        seen = arrivals.get(msg_id)
        if seen is None:
            doc = orjson.loads(body)
            data = doc.get("data") or {}
            # The generic envelope, the WMS/finance notices, or the ERP's record.
            ticket = ((data.get("ticket") or {}).get("external_id") or data.get("after_sale_no")
                      or doc.get("outer_as_id"))
            arrivals[msg_id] = seen = [ticket, time.time(), 0, None]
        seen[2] += 1  # type: ignore[operator]
        totals["attempts"] += 1
        # Chosen by id, so the same pushes hang in every run; only their first attempt.
        if seen[2] == 1 and int(hashlib.sha1(msg_id.encode()).hexdigest()[:8], 16) % 10_000 < cut:
            return hang()
        if seen[3] is None:
            seen[3] = now = time.time()
            totals["answered"] += 1
            stamps["last"] = now
            if stamps["first"] is None:
                stamps["first"] = now
        return 200, ok

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await lean_http.serve("127.0.0.1", args.port, handle)
        await stop.wait()
        server.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
