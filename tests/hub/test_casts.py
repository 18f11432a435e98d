"""Casts check the shape of a value before any arithmetic: what a platform
(or an attacker with a valid signature) puts in an amount or a time is a
CastError with a reason that does not repeat the value, never an
OverflowError, a decimal signal or seconds of CPU."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.casts import CASTS, MAX_FEN, CastError

yuan, fen, to_int = CASTS["yuan"], CASTS["fen"], CASTS["int"]


@pytest.mark.parametrize(("value", "expected"), [
    ("59.90", 5990), ("59.9", 5990), ("59", 5900), (" 0.01 ", 1), (".5", 50), ("+3.00", 300),
    (59.9, 5990), (59, 5900), (0, 0), ("21474836.47", MAX_FEN),
])
def test_yuan_to_fen_is_exact(value: object, expected: int) -> None:
    assert yuan(value) == expected


@pytest.mark.parametrize(("value", "why"), [
    ("Infinity", "not an amount"), ("-Infinity", "negative"), ("NaN", "not an amount"),
    ("sNaN", "not an amount"), ("1e999999999", "not an amount"), ("1E5", "not an amount"),
    (float("inf"), "not an amount"), (float("nan"), "not an amount"), (1e308, "not an amount"),
    ("12.345", "more than 2 decimals"), ("-5.00", "negative"), ("21474836.48", "over the largest"),
    ("9" * 60, "over the largest"), ("9" * 5000, "not an amount"), (10**30, "out of range"),
    (True, "not an amount"), ([5], "not an amount"), ({"yuan": 5}, "not an amount"), ("", "not an amount"),
    ("5,00", "not an amount"), ("¥5", "not an amount"), ("５.００", "not an amount"),
])
def test_yuan_refuses_what_is_not_a_plain_amount(value: object, why: str) -> None:
    with pytest.raises(CastError, match=why):
        yuan(value)


def test_fen_and_int_are_bounded_too() -> None:
    assert fen("5990") == 5990 and fen(5990.0) == 5990 and fen("100.00") == 100
    assert to_int("3") == 3 and to_int(-2) == -2
    for bad in ("1e3", "5990.5", "-1", str(MAX_FEN + 1), "Infinity", 1.5, "9" * 4000):
        with pytest.raises(CastError):
            fen(bad)
    for bad in ("1.0", "1e3", "9" * 30, float("nan"), "one", None, {"a": 1}):
        with pytest.raises(CastError):
            to_int(bad)


@pytest.mark.parametrize("cast", ["datetime", "local_datetime"])
@pytest.mark.parametrize("year", ["0001", "1999", "2100", "9999"])
def test_times_outside_the_range_are_refused_before_any_zone_arithmetic(cast: str, year: str) -> None:
    text = f"{year}-01-01T00:00:00+08:00" if cast == "datetime" else f"{year}-01-01 00:00:00"
    with pytest.raises(CastError, match="outside 2000..2099"):
        CASTS[cast](text)


def test_times_in_range_become_utc() -> None:
    assert CASTS["datetime"]("2026-11-11T00:03:12Z") == datetime(2026, 11, 11, 0, 3, 12, tzinfo=UTC)
    # No zone: platform local time, Asia/Shanghai.
    assert CASTS["datetime"]("2026-11-11T08:00:00") == datetime(2026, 11, 11, tzinfo=UTC)
    assert CASTS["local_datetime"]("2026-11-11 08:00:00") == datetime(2026, 11, 11, tzinfo=UTC)
    assert CASTS["unix"]("1762819200") == datetime(2025, 11, 11, tzinfo=UTC)
    assert CASTS["unix_ms"](1762819200000) == datetime(2025, 11, 11, tzinfo=UTC)


@pytest.mark.parametrize("value", [1e20, -1, "nan", "inf", 253402300800, "1e9", 10**25, "12:00", [], True])
def test_unix_times_are_bounded(value: object) -> None:
    with pytest.raises(CastError):
        CASTS["unix"](value)


def test_text_casts_refuse_objects_and_lists() -> None:
    assert CASTS["str"](12345) == "12345" and CASTS["lower"](" A@B.COM ") == "a@b.com"
    for bad in ({"a": 1}, [1], float("inf"), 10**30):
        with pytest.raises(CastError, match="is not text"):
            CASTS["str"](bad)


def test_a_reason_names_a_value_by_its_shape_unless_it_is_a_code() -> None:
    with pytest.raises(CastError) as err:
        yuan("王芳 13812345678")
    assert "王芳" not in str(err.value) and "13812345678" not in str(err.value)
    assert "a string of 14 characters" in str(err.value)
    with pytest.raises(CastError) as err:
        yuan("12.345")
    assert "'12.345'" in str(err.value)  # a code-like value is what the mapping author needs
