"""Config: every problem reported at once, each with its key path and line."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import load_config, parse_duration
from hub.errors import ConfigError
from hub.registry import Registry

ROOT = Path(__file__).resolve().parents[2]

BROKEN = """\
server:
  listen: "localhost"
  max_body_bytes: -1
storage:
  url: "mysql://nope"
security:
  pii_key: "${HUB_TEST_MISSING_KEY}"
sources:
  - {id: site, kind: website, secret: "not-a-whsec", tolerence: 5m}
  - {id: site, kind: carrier-pigeon}
destinations:
  - {id: hook, kind: webhook, url: "ftp://x", secret: "${file:/nonexistent/secret}"}
sync:
  - {on: ticket.exploded, to: nowhere}
"""


def test_every_error_has_its_key_path_and_line(tmp_path: Path, registry: Registry) -> None:
    p = tmp_path / "config.yaml"
    p.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    text = str(info.value)
    expected = [
        f"{p}:7: security.pii_key: environment variable HUB_TEST_MISSING_KEY is not set",
        f"{p}:12: destinations[0].secret: cannot read secret file /nonexistent/secret",
        f"{p}:2: server.listen: Value error, expected host:port, got 'localhost'",
        f"{p}:3: server.max_body_bytes: Input should be greater than 0",
        f"{p}:5: storage.url: Value error, expected sqlite+aiosqlite:///PATH",
        f"{p}:14: sync[0].on: Value error, unknown change 'ticket.exploded'",
    ]
    for line in expected:
        assert line in text, f"missing: {line}\n---\n{text}"


def test_kind_specific_errors_come_after_common_ones_are_fixed(tmp_path: Path, registry: Registry) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    p = tmp_path / "config.yaml"
    p.write_text(f"""\
security: {{pii_key: "{key}"}}
sources:
  - {{id: site, kind: website, secret: "not-a-whsec", tolerence: 5m}}
  - {{id: site, kind: carrier-pigeon}}
destinations:
  - {{id: hook, kind: webhook, url: "ftp://x", secret: "whsec_{key}"}}
sync:
  - {{on: ticket.created, to: nowhere}}
""")
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    problems = {(pr.path, pr.line) for pr in info.value.problems}
    assert ("sources[1].id", 4) in problems            # duplicate id
    assert ("sync[0].to", 8) in problems               # no such destination
    assert ("sources[0].secret", 3) in problems        # not whsec_
    assert ("sources[0].tolerence", 3) in problems     # typo: unknown key
    assert ("sources[1].kind", 4) in problems          # unknown kind
    assert ("destinations[0].url", 6) in problems      # not http(s)


def test_secrets_from_env_file_and_systemd_credentials(tmp_path: Path, registry: Registry) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "site").write_text("whsec_" + key + "\n")
    (tmp_path / "hook-secret").write_text("whsec_" + key)
    p = tmp_path / "config.yaml"
    p.write_text("""\
security: {pii_key: "${PII}"}
sources: [{id: site, kind: website, secret: "${cred:site}"}]
destinations: [{id: hook, kind: webhook, url: "http://x", secret: "${file:%s}"}]
sync: [{on: [ticket.created], to: hook}]
""" % (tmp_path / "hook-secret"))
    cfg = load_config(p, registry, env={"PII": key, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert cfg.sources[0].secret.get_secret_value() == "whsec_" + key  # type: ignore[attr-defined]
    assert cfg.destinations[0].secret.get_secret_value() == "whsec_" + key  # type: ignore[union-attr]
    assert cfg.sync[0].on == ["ticket.created"]  # `on:` is not YAML 1.1's True
    assert "whsec_" not in repr(cfg)  # secrets never print


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300
    assert parse_duration(2) == 2.0
    with pytest.raises(ValueError):
        parse_duration("soon")


def _env_for_example() -> dict[str, str]:
    whsec = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    names = ["HUB_OPS_TOKEN", "HUB_LEAD_TOKEN", "TB_APP_KEY", "TB_APP_SECRET", "TB_SESSION",
             "JD_APP_KEY", "JD_APP_SECRET", "JD_TOKEN", "WX_APPID", "WX_SECRET", "WX_TOKEN",
             "WX_AES_KEY", "CC_PUSH_PASSWORD", "ERP_SECRET", "WMS_SECRET", "FIN_SECRET"]
    env = {n: "x" for n in names}
    env.update(HUB_PII_KEY=base64.b64encode(os.urandom(32)).decode(), SITE_WEBHOOK_SECRET=whsec,
               CRM_WEBHOOK_SECRET=whsec, WX_AES_KEY="A" * 43)
    return env


def test_documented_example_config_is_valid(registry: Registry) -> None:
    cfg = load_config(ROOT / "config.yaml", registry, env=_env_for_example())
    assert {s.kind for s in cfg.sources} == {"taobao", "jd", "wechat", "website", "callcenter"}
    assert {d.kind for d in cfg.destinations} >= {"erp", "wms", "finance"}


def test_check_config_command_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "hub", "check-config", str(ROOT / "config.yaml")],
                          env={**os.environ, **_env_for_example()}, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    # Every bound is listed with its value; the example sets the server's, the rest are defaults.
    lines = {line.split()[0]: line for line in good.stdout.splitlines()[2:] if line.startswith("  ")}
    assert "64 MiB" in lines["server.max_pending_bytes"] and "(default)" not in lines["server.max_pending_bytes"]
    assert "60s" in lines["supervisor.stall_after"]
    assert {"server.max_connections", "server.header_timeout", "delivery.lease", "logging.repeat_limit"} <= set(lines)
    assert any(k.startswith("destinations[") and k.endswith(".max_response_bytes") for k in lines)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    res = subprocess.run([sys.executable, "-m", "hub", "check-config", str(bad)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2
    assert "security.pii_key: environment variable HUB_TEST_MISSING_KEY is not set" in res.stderr
    assert "sync[0].on" in res.stderr


async def test_run_refuses_kinds_not_available_yet(tmp_path: Path, registry: Registry) -> None:
    """A kind a connector declares before it can run (``available=False``) passes
    check-config and is refused by run, named, while enabled."""
    from hub.config import parse_config
    from hub.daemon import Hub
    from hub.interfaces import ConnectorSpec, DestinationKind
    from hub.yamlfile import YamlDoc

    planned = Registry([*registry.specs, ConnectorSpec(name="planned", destinations=(
        DestinationKind("fax", available=False, summary="notices by fax"),))])
    key = base64.b64encode(os.urandom(32)).decode()
    cfg = parse_config(YamlDoc({"storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/hub.db"},
                                "security": {"pii_key": key},
                                "destinations": [{"id": "fx", "kind": "fax", "url": "https://fax.example/x"}]},
                               "(test)"), planned)
    with pytest.raises(ConfigError, match="destination 'fx': kind 'fax' is not available yet"):
        await Hub(cfg, planned).start()


def test_a_disabled_entry_needs_no_secrets_but_its_typos_are_still_reported(
        tmp_path: Path, registry: Registry) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    p = tmp_path / "config.yaml"
    p.write_text(f"""\
security: {{pii_key: "{key}"}}
sources:
  - {{id: tb, kind: taobao, app_key: "${{TB_KEY}}", app_secret: "${{TB_SECRET}}", session: "${{TB_S}}",
     enabled: false}}
  - {{id: jd, kind: jd, app_key: "${{JD_KEY}}", enabled: false, poll_evrey: 5m}}
""")
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    (only,) = info.value.problems  # nothing about TB_* or JD_KEY: they are disabled
    assert (only.path, only.message) == ("sources[1].poll_evrey", "unknown key (did you mean 'poll_every'?)")
    # Enabled, the same entry needs its secrets.
    p.write_text(p.read_text().replace("poll_evrey: 5m", "poll_every: 5m").replace(
        "enabled: false}\n  - {id: jd", "enabled: true}\n  - {id: jd"))
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    assert {pr.path for pr in info.value.problems} == {"sources[0].app_key", "sources[0].app_secret",
                                                       "sources[0].session"}


def test_unknown_keys_name_the_nearest_known_one(tmp_path: Path, registry: Registry) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    p = tmp_path / "config.yaml"
    p.write_text(f"""\
security: {{pii_key: "{key}"}}
server: {{listne: "127.0.0.1:8080", max_body: 10}}
delivery: {{retry: {{inital: 5s}}}}
""")
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    got = {pr.path: pr.message for pr in info.value.problems}
    assert got == {"server.listne": "unknown key (did you mean 'listen'?)",
                   "server.max_body": "unknown key (did you mean 'max_body_bytes'?)",
                   "delivery.retry.inital": "unknown key (did you mean 'initial'?)"}


def test_variables_not_in_the_environment_come_from_dot_env_beside_the_config(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "config.yaml").write_text('security: {pii_key: "${HUB_TEST_DOTENV_KEY}"}\n')
    (tmp_path / ".env").write_text(f"# a comment\n\nHUB_TEST_DOTENV_KEY=\"{key}\"\n")
    monkeypatch.delenv("HUB_TEST_DOTENV_KEY", raising=False)
    cfg = load_config(tmp_path / "config.yaml", registry)
    assert cfg.security.pii_key.get_secret_value() == key  # type: ignore[union-attr]
    # The environment wins over the file.
    other = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("HUB_TEST_DOTENV_KEY", other)
    assert load_config(tmp_path / "config.yaml", registry).security.pii_key.get_secret_value() == other  # type: ignore[union-attr]
