"""A downstream system for the end-to-end benchmark, in a process of its own so
it takes no CPU from the bench's sender: verifies each push's Standard
Webhooks signature, records when each webhook-id arrived, and can be told to
sit on a share of first attempts (a destination that hangs on some pushes).

    python bench/push_receiver.py PORT SECRET [--hang-fraction 0.01] [--hang-seconds 30]

``GET /count`` answers ``{"answered": N, "attempts": M}`` (cheap, for big runs);
``GET /arrivals`` answers ``{webhook-id: [ticket external id, first arrival, attempts,
answered]}`` (unix seconds; ``answered``: when an attempt got its 200, None while none has).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

import orjson
from aiohttp import web

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

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            msg_id = standard_webhooks.verify([key], headers, body)
        except VerificationError as err:
            return web.json_response({"error": str(err)}, status=401)
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
            await asyncio.sleep(args.hang_seconds)
            return web.json_response({"ok": True})  # long after the hub gave up on it
        if seen[3] is None:
            seen[3] = time.time()
            totals["answered"] += 1
        return web.json_response({"ok": True})

    async def report(_request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(arrivals), content_type="application/json")

    app = web.Application(client_max_size=1 << 22)
    app.router.add_post("/hook", push)
    app.router.add_get("/arrivals", report)
    app.router.add_get("/count", lambda _r: web.json_response(totals))
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
