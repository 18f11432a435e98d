"""``hub demo --keep`` as a newcomer runs it: events flow in, pushes flow out,
the summary ends with the dashboard's address and a token that signs in,
and Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest

pytestmark = pytest.mark.slow


async def _read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float) -> str:
    seen: list[str] = []
    assert proc.stdout is not None

    async def read() -> None:
        while True:
            line = await proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError("the demo ended early:\n" + "".join(seen))
            seen.append(line.decode())
            if marker in seen[-1]:
                return

    await asyncio.wait_for(read(), timeout)
    return "".join(seen)


async def test_the_demo_ends_with_a_dashboard_and_a_token_that_signs_in() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "demo", "--seconds", "2", "--requests", "4", "--keep",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    try:
        output = await _read_until(proc, "staying up", timeout=90)
        assert "what the hub did" in output and "pushes (delivered" in output
        found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/dashboard\s+token: (\S+)", output)
        assert found, output
        base, token = found.groups()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(f"{base}/dashboard/login", data={"token": token}) as r:
                page = await r.text()
                assert r.status == 200 and "Recent tickets" in page
                for source in ("site", "tb-flagship", "jd-main"):
                    assert f'data-source="{source}"' in page
            async with http.get(f"{base}/api/v1/tickets?limit=1",
                                headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200 and (await r.json())["tickets"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
