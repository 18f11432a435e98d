"""Fuzz every source's mapping: take each sample event beside the mapping,
put arbitrary JSON (extreme numbers, impossible dates, deep nesting, wrong
types) in any of its fields, and the mapping must answer with a normalized
event whose fields have their kinds, or a Quarantine — never another
exception, and each within hypothesis' deadline (a bounded cost, not a
speed goal: a cast doing arithmetic on 1e999999999 would take seconds)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import Quarantine
from hub.inbox import event_document
from hub.mapping import InboundMapping, MappingSet, default_mappings_dir
from hub.normalized import Normalized
from hub.pipeline import scrub_free_text
from hub.registry import Registry
from tests.hostile import hostile_values, paths, replaced

SAMPLES = sorted(default_mappings_dir().glob("tests/*/*.input.json"))
SOURCES = sorted({p.parent.name for p in SAMPLES})


def test_every_source_kind_has_samples_to_fuzz(registry: Registry) -> None:
    kinds = sorted(k for k, kind in registry.sources.items() if kind.available)
    assert SOURCES == kinds


def _outcome(mapping: InboundMapping, doc: dict[str, Any]) -> Normalized | Quarantine:
    try:
        mapping.dedupe_key(doc)
    except Quarantine:
        pass
    try:
        n = mapping.apply(doc)
    except Quarantine as q:
        assert str(q)
        return q
    scrub_free_text(n)
    _has_its_kinds(n)
    return n


def _has_its_kinds(n: Normalized) -> None:
    """What the pipeline writes: text is text, amounts are whole fen, times aware."""
    for section in (n.ticket, n.order or {}, n.customer):
        for key, value in section.items():
            if value is None:
                continue
            if key in ("refund_amount", "paid_amount"):
                assert isinstance(value, int) and not isinstance(value, bool) and value >= 0
            elif key in ("source_updated_at", "created_at", "placed_at"):
                assert isinstance(value, datetime) and value.tzinfo is not None
            elif key == "items":
                assert isinstance(value, list) and all(isinstance(i, dict) for i in value)
            else:
                assert isinstance(value, str) and "\x00" not in value, (key, value)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in n.identities)
    json.dumps([n.ticket, n.order, n.customer, n.interaction], default=str)  # storable as JSON


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
@settings(deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_json_in_any_field_is_normalized_or_quarantined(sample: Path, data: st.DataObject) -> None:
    mapping = MappingSet().inbound(sample.parent.name)
    given_doc = json.loads(sample.read_text())
    headers, body = given_doc["headers"], given_doc["body"]
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="changes")):
        where = paths(body)
        if not where or data.draw(st.integers(0, 20), label="whole body?") == 0:
            body = data.draw(hostile_values, label="body")
            break
        path = data.draw(st.sampled_from(where), label="path")
        body = replaced(body, path, data.draw(hostile_values, label="value"))
    if headers and data.draw(st.booleans(), label="fuzz a header?"):
        name = data.draw(st.sampled_from(sorted(headers)), label="header")
        headers = {**headers, name: data.draw(st.text(max_size=300), label="header value")}
    _outcome(mapping, event_document("src", headers, body))


@pytest.mark.parametrize("source", SOURCES)
def test_a_normal_sample_still_normalizes(source: str) -> None:
    """The harness itself: unfuzzed samples come out normalized (so the fuzz
    above is not passing by quarantining everything)."""
    mapping = MappingSet().inbound(source)
    for sample in default_mappings_dir().glob(f"tests/{source}/*.input.json"):
        given_doc = json.loads(sample.read_text())
        assert isinstance(_outcome(mapping, event_document("src", given_doc["headers"], given_doc["body"])),
                          Normalized)
