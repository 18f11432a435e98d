"""Which roles each process of ``hub run`` holds, by database and process count."""

from __future__ import annotations

import pytest

from hub.config import HubConfig
from hub.processes import ALL, plan
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
