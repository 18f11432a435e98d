"""A hub process of ``hub run``: :func:`main` with ``--config PATH --role ROLES``.

What ``hub run --role ROLES`` does, without the command line around it.
:mod:`hub.processes` forks each child from a parent that has imported this
module and what it runs, then calls :func:`main`; ``python -m hub.child``
runs the same in a fresh interpreter. Either way a child never imports the
CLI's libraries (typer, click) nor — the schema checked without it
(:mod:`hub.schema_version`), ``hub run`` having migrated before it started
the children — Alembic. Exit codes are the parent's: 2 (``CONFIG_ERROR``)
when the config cannot run, which restarting would not mend; 1 for other
failures to start; 0 after a drain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hub.child")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--role", required=True, help="intake, processing, delivery (comma-separated)")
    args = ap.parse_args(argv)

    import structlog

    from hub import logs
    from hub.config import load_config
    from hub.daemon import Hub, run_until_signalled
    from hub.errors import ConfigError, HubError, MappingError
    from hub.listener import LISTEN_FD
    from hub.processes import CONFIG_ERROR, parse_roles, pin
    from hub.registry import Registry

    try:
        roles = parse_roles(args.role)
        registry = Registry.discover()
        cfg = load_config(args.config, registry)
    except (ValueError, ConfigError) as err:
        problems = getattr(err, "problems", None) or [err]
        print(f"{args.config}: cannot start", *(f"  • {p}" for p in problems), sep="\n", file=sys.stderr)
        return CONFIG_ERROR
    logs.configure(cfg.logging.level, cfg.logging.format, repeat_limit=cfg.logging.repeat_limit,
                   repeat_window=cfg.logging.repeat_window)
    problem = pin(roles, cfg.supervisor.cpu_affinity)  # before any thread starts: they inherit it
    if problem:
        structlog.get_logger("hub.child").warning("running unpinned", problem=problem)
    hub = Hub(cfg, registry, roles)
    inherited = os.environ.get(LISTEN_FD)
    if "intake" in roles and inherited and inherited.isdigit():
        hub.listen_fd = int(inherited)  # the socket `hub run` bound: every intake process serves it
    try:
        asyncio.run(run_until_signalled(hub))
    except (ConfigError, MappingError) as err:
        print("cannot start:", *(f"  • {p}" for p in err.problems), sep="\n", file=sys.stderr)
        return CONFIG_ERROR
    except HubError as err:
        print(f"cannot start: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
