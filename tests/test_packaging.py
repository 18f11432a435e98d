"""What ships for operators works as shipped: the unit passes systemd-analyze
verify in the layout the README installs, the config, the env example and
the unit name the same secrets, and a newcomer's `cp systemd/hub.env.example
.env` plus values makes `hub check-config config.yaml` pass."""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub import standard_webhooks

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "hub.service"
ENV_EXAMPLE = ROOT / "systemd" / "hub.env.example"
CONFIG = ROOT / "config.yaml"
HUB = Path(sys.executable).with_name("hub")


def _config_names() -> set[str]:
    """Every ${NAME} (environment or same-named credential) config.yaml uses."""
    text = "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
                     for line in CONFIG.read_text(encoding="utf-8").splitlines())
    return {m for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}


def _example_names() -> tuple[set[str], set[str]]:
    """(names set in the env example, names listed there commented out)."""
    given, later = set(), set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z_][A-Z0-9_]*)=.*", line):
            given.add(m.group(1))
        elif m := re.fullmatch(r"# ([A-Z_][A-Z0-9_]*)=", line):
            later.add(m.group(1))
    return given, later


def test_config_env_example_and_unit_name_the_same_secrets() -> None:
    given, later = _example_names()
    assert _config_names() == given | later
    assert not given & later
    # Names the unit loads as credentials are names the config reads.
    credentials = set(re.findall(r"LoadCredential(?:Encrypted)?=([A-Za-z0-9_]+):", UNIT.read_text()))
    assert credentials and credentials <= given
    assert "EnvironmentFile=-/etc/hub/hub.env" in UNIT.read_text()


def _filled(name: str) -> str:
    if name.endswith("PII_KEY"):
        return base64.b64encode(os.urandom(32)).decode()
    if name.endswith("SECRET"):
        return standard_webhooks.new_secret()
    return secrets.token_urlsafe(24)


def test_a_newcomer_copies_the_env_example_fills_it_and_the_shipped_config_passes(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    env = {k: v for k, v in os.environ.items() if k not in _config_names() and k != "CREDENTIALS_DIRECTORY"}
    before = subprocess.run([str(HUB), "check-config", "config.yaml"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert before.returncode == 2
    missing = set(re.findall(r"environment variable (\w+) is not set", before.stderr))
    given, _later = _example_names()
    assert missing == given  # exactly what the example asks for: the disabled entries need nothing

    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=", line)
        lines.append(f"{m.group(1)}={_filled(m.group(1))}" if m else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    after = subprocess.run([str(HUB), "check-config", "config.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
    assert "config.yaml: OK" in after.stdout


def test_a_secret_can_come_from_a_credential_of_the_same_name(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    creds = tmp_path / "creds"
    creds.mkdir()
    given, _later = _example_names()
    for name in given:
        (creds / name).write_text(_filled(name) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in _config_names()} | {"CREDENTIALS_DIRECTORY": str(creds)}
    run = subprocess.run([str(HUB), "check-config", "-c", "config.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Installed as the README says — the hub in /opt/hub/.venv, the unit in
    /etc/systemd/system — into a root of its own, beside the machine's units."""
    root = tmp_path / "root"
    (root / "opt/hub/.venv/bin").mkdir(parents=True)
    # A file, not a symlink: systemd resolves links inside the root.
    shim = root / "opt/hub/.venv/bin/hub"
    shim.write_text(f"#!/bin/sh\nexec {HUB} \"$@\"\n")
    shim.chmod(0o755)
    shutil.copy(ROOT / "README.md", root / "opt/hub/README.md")
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")  # ExecReload's, as every host has it
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/hub.service")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    run = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                          str(root / "etc/systemd/system/hub.service")], capture_output=True, text=True)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr
    # And it can fail: an unknown key is reported.
    broken = root / "etc/systemd/system/hub.service"
    broken.write_text(broken.read_text().replace("DynamicUser=yes", "DynamicUsr=yes"))
    run = subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(broken)],
                         capture_output=True, text=True)
    assert "Unknown key 'DynamicUsr'" in run.stdout + run.stderr


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def test_docs_and_docstrings_point_only_inside_the_repository() -> None:
    """The repository stands alone: no reference to a design or notes file
    outside it, and every relative link in the README and docs/ resolves."""
    outside = re.compile(r"\.\./shared|shared/(DESIGN|PLATFORMS)|\bDESIGN §|\bDESIGN\.md|(?<!docs/)\bPLATFORMS\.md")
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
             for p in _tracked("*.py", "*.md", "*.yaml", "*.toml", "systemd/*")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not found, "\n".join(found)
    broken = []
    for doc in _tracked("README.md", "docs/*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert not broken, broken


def test_the_container_config_passes_with_the_env_example_filled(tmp_path: Path) -> None:
    """compose.config.yaml (what the Dockerfile ships) needs only the env example's
    names and the database URL compose.yaml gives it. (No Docker engine runs here:
    the image itself is not built by the tests.)"""
    shutil.copy(ROOT / "compose.config.yaml", tmp_path / "config.yaml")
    env = {k: v for k, v in os.environ.items() if k not in _config_names()}
    given, _later = _example_names()
    env |= {name: _filled(name) for name in given}
    env["HUB_DATABASE_URL"] = "postgresql+asyncpg://hub:hub@db/hub"
    run = subprocess.run([str(HUB), "check-config", "config.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    compose = (ROOT / "compose.yaml").read_text()
    assert "HUB_DATABASE_URL: postgresql+asyncpg://" in compose and "env_file: .env" in compose
    assert "COPY compose.config.yaml /etc/hub/config.yaml" in (ROOT / "Dockerfile").read_text()
