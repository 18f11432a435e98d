"""Which roles each process of ``hub run`` holds, by database and process count,
and which cores it runs on when ``supervisor.cpu_affinity`` says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from hub.config import HubConfig
from hub.errors import ConfigError
from hub.processes import ALL, cores_for, plan
from hub.registry import Registry
from tests.conftest import make_config

SQLITE = "sqlite+aiosqlite:////tmp/never-opened.db"
POSTGRES = "postgresql+asyncpg://hub@127.0.0.1/never-opened"


def _config(registry: Registry, pii_key: str, site_secret: str, url: str, processes: int | str) -> HubConfig:
    return make_config(registry, db_url=url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                       supervisor={"processes": processes})


@pytest.mark.parametrize(("processes", "cores", "expected"), [
    ("auto", 1, [ALL]),
    ("auto", 2, [{"intake"}, {"processing"}, {"delivery"}]),
    ("auto", 16, [{"intake"}, {"processing"}, {"delivery"}]),  # one writer per file: more would queue
    (1, 16, [ALL]),
    (2, 16, [{"intake", "delivery"}, {"processing"}]),
    (3, 2, [{"intake"}, {"processing"}, {"delivery"}]),
    (8, 2, [{"intake"}, {"processing"}, {"delivery"}]),
])
def test_sqlite_runs_one_role_a_process(registry: Registry, pii_key: str, site_secret: str,
                                        processes: int | str, cores: int, expected: list[set[str]]) -> None:
    got = plan(_config(registry, pii_key, site_secret, SQLITE, processes), cores=cores)
    assert [set(r) for r in got] == [set(r) for r in expected]


@pytest.mark.parametrize(("processes", "cores", "count"), [("auto", 2, 2), ("auto", 8, 8), (5, 2, 5), (1, 8, 1)])
def test_postgres_runs_every_role_in_every_process(registry: Registry, pii_key: str, site_secret: str,
                                                   processes: int | str, cores: int, count: int) -> None:
    got = plan(_config(registry, pii_key, site_secret, POSTGRES, processes), cores=cores)
    assert got == [ALL] * count


# ---------------------------------------------------------------- cpu affinity

AFFINITY = {"intake": [0], "delivery": [0], "processing": [1]}


@pytest.mark.parametrize(("roles", "affinity", "expected"), [
    ({"processing"}, AFFINITY, {1}),
    ({"intake", "delivery"}, AFFINITY, {0}),
    (ALL, AFFINITY, {0, 1}),                             # one process, every role: their cores together
    ({"intake", "delivery"}, {"intake": [0]}, None),     # delivery unlisted: the kernel places the process
    ({"processing"}, {}, None),                          # the default: nothing pinned
])
def test_a_process_runs_on_its_roles_cores_when_each_is_listed(
        roles: set[str], affinity: dict[str, list[int]], expected: set[int] | None) -> None:
    assert cores_for(frozenset(roles), affinity) == expected


@pytest.mark.parametrize(("affinity", "error"), [
    ({"procesing": [1]}, "supervisor.cpu_affinity.procesing"),
    ({"processing": []}, "processing: list at least one core"),
    ({"processing": [-1]}, "cores are numbered from 0"),
])
def test_a_wrong_affinity_is_refused_naming_its_key(registry: Registry, pii_key: str, site_secret: str,
                                                    affinity: dict[str, list[int]], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        make_config(registry, db_url=SQLITE, pii_key=pii_key, site_secret=site_secret, receiver=None,
                    supervisor={"cpu_affinity": affinity})


def _pinned_in_a_subprocess(affinity: dict[str, list[int]]) -> tuple[str, str]:
    """pin() for a processing process, run where it cannot move the tests' own process."""
    code = ("import os, sys, json\nfrom hub.processes import pin\n"
            f"problem = pin(frozenset({{'processing'}}), {affinity!r})\n"
            "print(json.dumps([problem, sorted(os.sched_getaffinity(0))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    problem, cores = json.loads(out)
    return problem, cores


def test_pin_keeps_the_process_on_its_cores_or_says_why_not() -> None:
    problem, cores = _pinned_in_a_subprocess({"processing": [0]})
    assert (problem, cores) == (None, [0])
    # A core this machine does not have: the process runs unpinned, and says so.
    everywhere = sorted(os.sched_getaffinity(0))
    problem, cores = _pinned_in_a_subprocess({"processing": [4095]})
    assert cores == everywhere
    assert problem.startswith("supervisor.cpu_affinity: cannot keep processing on cores [4095]")
