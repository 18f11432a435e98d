"""Sync rules: which ticket changes go to which destinations (pure), and a
rule naming what does not exist refused at start with its key path."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from hub import standard_webhooks
from hub.config import SyncRule, load_config
from hub.errors import ConfigError
from hub.registry import Registry
from hub.sync import Change, destinations_for

RULES = [SyncRule(on=["ticket.created", "ticket.status_changed"], to=["erp"]),
         SyncRule(on=["ticket.status_changed"], status=["awaiting_return"], type=["return_refund", "exchange"],
                  to=["wms"]),
         SyncRule(on=["ticket.status_changed"], status=["return_received"], min_refund="500", to=["finance",
                                                                                                  "erp"]),
         SyncRule(on=["ticket.created"], channel=["taobao"], source=["tb-flagship"], to=["tb-writeback"])]


def ticket(**over: object) -> SimpleNamespace:
    return SimpleNamespace(**({"type": "return_refund", "channel": "website", "source_id": "site",
                               "refund_amount": 19900} | over))


def to(change: Change, t: SimpleNamespace) -> list[str]:
    return destinations_for(RULES, change, t)


def test_every_condition_of_a_rule_must_hold() -> None:
    created = Change("ticket.created", None, "new", "1.created")
    assert to(created, ticket()) == ["erp"]
    assert to(created, ticket(channel="taobao", source_id="tb-flagship")) == ["erp", "tb-writeback"]
    assert to(created, ticket(channel="taobao", source_id="tb-outlet")) == ["erp"]
    returning = Change("ticket.status_changed", "new", "awaiting_return", "2.status_changed")
    assert to(returning, ticket()) == ["erp", "wms"]
    assert to(returning, ticket(type="refund_only")) == ["erp"]           # nothing to take back in
    received = Change("ticket.status_changed", "return_shipped", "return_received", "3.status_changed")
    assert to(received, ticket(refund_amount=49999)) == ["erp"]           # under ¥500
    assert to(received, ticket(refund_amount=50000)) == ["erp", "finance"]  # each destination once
    assert to(received, ticket(refund_amount=None)) == ["erp"]
    assert to(Change("ticket.updated", "new", "new", "4.updated"), ticket()) == []


def _problems(tmp_path: Path, registry: Registry, sync: str) -> str:
    key = base64.b64encode(os.urandom(32)).decode()
    p = tmp_path / "config.yaml"
    p.write_text(f"""\
security: {{pii_key: "{key}"}}
sources:
  - {{id: site, kind: website, secret: "{standard_webhooks.new_secret()}"}}
destinations:
  - {{id: hook, kind: webhook, url: "https://x/hook", secret: "{standard_webhooks.new_secret()}"}}
sync:
{sync}""")
    with pytest.raises(ConfigError) as info:
        load_config(p, registry, env={})
    return str(info.value)


def test_a_rule_that_names_nothing_real_is_refused_with_its_key_path(tmp_path: Path, registry: Registry) -> None:
    text = _problems(tmp_path, registry, """\
  - {on: ticket.created, type: refund, to: hook}
  - {on: ticket.created, min_refund: -1, to: hook}
""")
    for line in ("sync[0].type: Value error, unknown ticket type 'refund'",
                 "sync[1].min_refund: Input should be greater than or equal to 0"):
        assert line in text, f"missing: {line}\n---\n{text}"
    text = _problems(tmp_path, registry, """\
  - {on: ticket.created, source: sitee, to: hook}
  - {on: ticket.created, channel: [website, taobaoo], to: hoook}
""")
    for line in ("sync[0].source: no source with id 'sitee' (did you mean 'site'?)",
                 "sync[1].channel[1]: no channel (source kind) 'taobaoo' (did you mean 'taobao'?)",
                 "sync[1].to: no destination with id 'hoook' (did you mean 'hook'?)"):
        assert line in text, f"missing: {line}\n---\n{text}"
