"""What a hostile (or merely broken) sender puts in an event: hypothesis
strategies for the fuzz harness, and the customers whose data must never
show up in clear anywhere but where it is sealed."""

from __future__ import annotations

import copy
import string
from typing import Any

from hypothesis import strategies as st

# Strings that have broken parsers and casts somewhere.
NASTY_TEXT = [
    "Infinity", "-Infinity", "NaN", "sNaN", "1e999999999", "-1e999999999", "9" * 5000, "0x1f", "1_000",
    "1e-400", "", " ", "\x00", "\ud7ff", "\u202e", "٣", "５.００", "null", "true", "[]", "{}",
    "0001-01-01T00:00:00+08:00", "9999-12-31 23:59:59", "2026-02-30 12:00:00", "1969-12-31T23:59:59Z",
    "253402300800", "-62135596800", "13987654321", "欧阳娜娜", "杭州市西湖区文三路478号", "x" * 20_000,
]
NASTY_NUMBERS = [0, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -1e308, 5e-324, 0.1 + 0.2]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN; strings carry those
    st.text(max_size=40), st.sampled_from(NASTY_TEXT), st.sampled_from(NASTY_NUMBERS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(string.ascii_letters + "_", max_size=12), inner, max_size=5)),
    max_leaves=25,
)


@st.composite
def deeply_nested(draw: Any) -> Any:
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(min_value=60, max_value=250))):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


hostile_values = st.one_of(json_values, deeply_nested())


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``doc`` a value sits (objects' keys, lists' indexes)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(paths(v, (*prefix, i)))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``doc`` with ``value`` at ``path``."""
    out = copy.deepcopy(doc)
    cur = out
    for step in path[:-1]:
        cur = cur[step]
    cur[path[-1]] = value
    return out


# A customer whose details must never appear in clear in a table or a log line,
# in any of the ways people write them.
NAME = "欧阳娜娜"
ADDRESS = "杭州市西湖区文三路478号华星科技大厦"
PHONE = "13987654321"
PHONES = [PHONE, "139 8765 4321", "139.8765.4321", "(139)87654321", "+86 139-8765-4321",
          "0571-8888 6666", "+86 571 8888 6666", "(0571)88886666"]
EMAIL = "nana.ouyang@example.com"
DEEP = b"[" * 900 + b"]" * 900  # a body nested this deep is JSON orjson reads but will not write


def hostile_variants() -> list[tuple[str, Any]]:
    """(field of a website request's data, value) pairs a validly signed request
    might carry; None removes the field. Each must be quarantined."""
    return [
        ("amount", "Infinity"), ("amount", "-Infinity"), ("amount", "NaN"), ("amount", "sNaN"),
        ("amount", "1e999999999"), ("amount", "9" * 3000), ("amount", 1e308), ("amount", [1]),
        ("amount", {"yuan": 1}), ("amount", "-5"), ("amount", True), ("amount", PHONE),
        ("description", {"text": NAME}), ("description", ["a"]), ("description", "a\x00b"),
        ("items", "SKU-1"), ("items", [{"sku": "a", "qty": {"n": 1}}]), ("items", [[1]]),
        ("items", [{"sku": "a", "qty": "1e999999"}]), ("items", [{"sku": "a", "qty": 1}] * 600),
        ("request_id", {"id": 1}), ("request_id", "x" * 10_000), ("request_id", None),
        ("kind", ["return"]), ("kind", NAME), ("kind", 12), ("reason", {"a": ADDRESS}),
        ("order_id", "DEEP"), ("order_id", [ADDRESS]),
        ("customer", {"user_id": {"id": 1}, "phone": PHONE, "name": NAME}),
        ("customer", {"user_id": "u1", "email": ["x"], "name": NAME}),
        ("customer", {"user_id": "u" * 1000, "phone": PHONE, "name": NAME, "address": ADDRESS}),
    ]


def hostile_timestamps() -> list[Any]:
    """Values of a website request's ``timestamp``: each must be quarantined."""
    return ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59", "1969-12-31T23:59:59Z", 12,
            "2026-13-45T00:00:00Z", {"t": 1}, "x" * 5000, f"{NAME}{PHONE}"]


def clear_forms() -> list[str]:
    """The strings whose presence anywhere outside a sealed value is a leak."""
    digits = {"".join(c for c in p if c.isdigit()) for p in PHONES}
    national = {d[2:] if d.startswith("86") else d for d in digits}
    return sorted({NAME, ADDRESS, "文三路478号", EMAIL, *PHONES, *national})
