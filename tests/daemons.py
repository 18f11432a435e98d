"""The hub as operators run it — ``hub run -c config.yaml`` in a process of its
own — for tests that kill it, restart it or measure its memory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    config: Path
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "-c", str(self.config)],
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def ready(self, http: aiohttp.ClientSession, timeout: float = 30) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                async with http.get(f"{self.url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"hub did not become ready:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the hub: its parent, and so (they die with it) every process it started."""
        assert self.proc is not None
        children = self.pids[1:]
        self.proc.send_signal(signal.SIGKILL)  # no drain, no goodbye
        self.proc.wait(10)
        for pid in children:
            for _ in range(200):
                if not Path(f"/proc/{pid}").exists() or _state(pid) == "Z":
                    break
                time.sleep(0.01)

    @property
    def pids(self) -> list[int]:
        """The hub's processes: the one started, then those it started (`hub run`'s children)."""
        assert self.proc is not None
        try:
            kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            kids = []
        return [self.pid, *(int(k) for k in kids)]

    def stop(self) -> int:
        """SIGTERM: drain and exit; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def rss(self) -> int:
        """Resident memory now of all the hub's processes, in bytes."""
        return sum(_status_kb(pid, "VmRSS") for pid in self.pids) * 1024

    def peak_rss(self) -> int:
        """The most resident memory each of the hub's processes has had, summed, in bytes."""
        return sum(_status_kb(pid, "VmHWM") for pid in self.pids) * 1024

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def daemon(tmp_path: Path, config: dict[str, Any], port: int | None = None) -> Daemon:
    """A daemon (not started) with ``config`` and its log in ``tmp_path``."""
    port = port or free_port()
    config = {**config, "server": {"listen": f"127.0.0.1:{port}", **config.get("server", {})}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return Daemon(path, tmp_path / "hub.log", port)
