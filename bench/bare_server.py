"""The ceiling: a bare aiohttp handler that reads a POST body and answers 200.

Run as ``python bench/bare_server.py PORT``; used by bench/ingest.py and
bench/deliver.py as the baseline measured in the same run.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"accepted"}', content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
