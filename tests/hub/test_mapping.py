"""The mapping engine: every sample beside a mapping normalizes to its
expected output; bad mapping files fail with file, line and key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.errors import MappingError, Quarantine
from hub.inbox import event_document
from hub.mapping import (
    MappingSet,
    compile_path,
    compile_template_path,
    default_mappings_dir,
    load_mapping,
)
from hub.normalized import nesting_depth_over

SAMPLES = sorted(default_mappings_dir().glob("tests/*/*.input.json"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_mapping_samples(sample: Path) -> None:
    mapping = MappingSet().inbound(sample.parent.name)
    given = json.loads(sample.read_text())
    expected = json.loads(sample.with_name(sample.name.replace(".input.", ".expected.")).read_text())
    doc = event_document("src", given["headers"], given["body"])
    n = mapping.apply(doc)
    got = json.loads(json.dumps({
        "dedupe_key": mapping.dedupe_key(doc), "ticket": n.ticket, "order": n.order,
        "customer": n.customer, "identities": [list(i) for i in n.identities],
    }, default=lambda v: v.isoformat()))
    assert got == expected


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 2


BAD = """\
name: broken
kind: inbound
version: 1
dedupe_key: "@headers.webhook-id"
ticket:
  external_id: data.id
  type:
    path: data.kind
    map: {refund: refund_only, return: sending_back}
  status: {value: new, cast: rot13}
  colour: data.colour
customer:
  phone: {path: data.phone, requried: true}
"""


def test_bad_mapping_names_file_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(BAD)
    with pytest.raises(MappingError) as info:
        load_mapping(p)
    text = str(info.value)
    assert f"{p}:9: ticket.type.map.return: 'sending_back' is not one of refund_only" in text
    assert f"{p}:10: ticket.status.cast: unknown cast 'rot13'" in text
    assert f"{p}:11: ticket.colour: unknown ticket field" in text
    assert f"{p}:13: customer.phone.requried: unknown key" in text


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    p = tmp_path / "syntax.yaml"
    p.write_text("kind: inbound\nversion: 1\nticket:\n  type: [unclosed\n")
    with pytest.raises(MappingError) as info:
        load_mapping(p)
    assert str(info.value).startswith(f"{p}:")
    assert "YAML syntax error" in str(info.value)


def test_missing_required_value_quarantines() -> None:
    mapping = MappingSet().inbound("website")
    doc = event_document("site", {"webhook-id": "m1"}, {"type": "aftersale.requested",
                                                         "timestamp": "2026-11-11T00:00:00Z",
                                                         "data": {"kind": "refund"}})
    with pytest.raises(Quarantine, match="ticket.external_id: required value is missing"):
        mapping.apply(doc)


def test_mapping_test_command_prints_the_normalized_records() -> None:
    sample = default_mappings_dir() / "tests/website/return_request.input.json"
    res = subprocess.run([sys.executable, "-m", "hub", "mapping", "test", "website", str(sample),
                          "-c", "/nonexistent.yaml"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["mapping"] == "website@1"
    assert out["ticket"]["refund_amount"] == 5990
    assert out["order"] == {"external_id": "SO8812034412"}


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("a", {"a": 1}, 1),
    ("a", {"a": ""}, ""),
    ("a", [1], None),                                   # the body is a list: no key
    ("a.b", {"a": {"b": "x"}}, "x"),
    ("a.b", {"a": "text"}, None),                       # a step into text
    ("a.b", {"a": None}, None),
    ("a.b", {"a": [{"b": 1}]}, None),                   # a key of a list
    ("a.b.c", {"a": {"b": {"c": False}}}, False),
    ("a.b.c.d", {"a": {"b": {"c": {"d": 0}}}}, 0),
    ("a.b.c.d", {"a": {"b": {"c": 5}}}, None),
    ("a.1.b", {"a": [{"b": 1}, {"b": 2}]}, 2),           # an index: the general walk
    ("a.-1", {"a": [7, 8]}, 8),
    ("a.2", {"a": [7, 8]}, None),
])
def test_compiled_paths_walk_objects_and_lists_and_stop_at_anything_else(path: str, body: object,
                                                                          expected: object) -> None:
    got = compile_path(path)({"body": body, "headers": {}})
    assert got == expected and type(got) is type(expected)
    # A field given as a bare path reads "" as absent, whichever walk it takes.
    as_field = compile_path(path, empty_is_none=True)({"body": body})
    assert as_field == (None if expected == "" else expected)


@pytest.mark.parametrize(("path", "ctx", "expected"), [
    ("ticket", {"ticket": {"id": 1}}, {"id": 1}),
    ("ticket.id", {"ticket": {"id": 0}}, 0),
    ("ticket.id", {"ticket": None}, None),              # no order, say: nothing to read
    ("ticket.id", {"ticket": "text"}, None),
    ("ticket.id", {}, None),
    ("ticket.id", ["ticket"], None),
    ("customer.address.city", {"customer": {"address": {"city": "杭州"}}}, "杭州"),
    ("customer.address.city", {"customer": {"address": "杭州"}}, None),
])
def test_outbound_paths_read_the_context_and_stop_at_anything_not_an_object(path: str, ctx: object,
                                                                             expected: object) -> None:
    got = compile_template_path(path)(ctx)
    assert got == expected and type(got) is type(expected)


def test_a_header_path_reads_the_headers() -> None:
    assert compile_path("@headers.webhook-id")({"body": {}, "headers": {"webhook-id": "m1"}}) == "m1"
    assert compile_path("@headers.webhook-id")({"body": {}, "headers": None}) is None
    assert compile_path("@source.id")({"source": {"id": "site"}}) == "site"


def test_nesting_is_measured_to_the_limit_and_no_further() -> None:
    doc: object = "leaf"
    for _ in range(10):
        doc = {"k": [doc]}  # 20 levels of containers
    assert not nesting_depth_over(doc, limit=20)
    assert nesting_depth_over(doc, limit=19)
    assert not nesting_depth_over("text") and not nesting_depth_over([])
    deep: object = []
    for _ in range(100_000):  # far past the recursion limit: the walk stops at the limit
        deep = [deep]
    assert nesting_depth_over(deep)
