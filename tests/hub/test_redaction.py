"""Phone numbers in every way people write them are masked in free text, and
what the hub says about a failure (reasons, exception messages, tracebacks)
never repeats a customer's phone, name or address."""

from __future__ import annotations

import io
import json
import logging
import os
import re

import pytest
import structlog

from hub import logs
from hub.pii import PiiCipher, mask_contacts_in, mask_name, mask_phones_in
from hub.redaction import describe, error_summary, format_exception, scrub_error_text

PHONES = [
    "13812345678", "138 1234 5678", "138-1234-5678", "139.1234.5678", "(139)12345678",
    "(139) 1234 5678", "+86 139 1234 5678", "+86-13912345678", "0086 139 1234 5678", "(+86)13912345678",
    "１３９１２３４５６７８",  # typed with a Chinese input method
    "0571-8888 6666", "0571-88886666", "(0571)88886666", "（0571）8888-6666", "010-12345678",
    "021 1234 5678", "+86 571 8888 6666", "+86-571-88886666", "+86(0)571 8888 6666",
]


@pytest.mark.parametrize("phone", PHONES)
def test_every_way_of_writing_a_number_is_masked_in_text(phone: str) -> None:
    text = f"请联系我{phone}，谢谢"
    masked = mask_phones_in(text)
    assert "****" in masked
    digits = "".join(c for c in phone.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
                     if c.isdigit())
    # No run of the number's middle digits survives.
    assert digits[-8:-4] not in "".join(c for c in masked if c.isdigit())
    assert masked.startswith("请联系我") and masked.endswith("，谢谢")


@pytest.mark.parametrize("text", [
    "2026-11-11 00:03:12", "order SO8812034412", "qty 2, amount 59.90", "退款 1299.00 元",
    "SKU-MUG-014", "call 400-820-8820",
])
def test_what_is_not_a_phone_stays(text: str) -> None:
    assert mask_contacts_in(text) == text


def test_emails_and_names() -> None:
    assert mask_contacts_in("写信到 wang.fang+x@example.com.cn 吧") == "写信到 w***@example.com.cn 吧"
    assert (mask_name("王芳"), mask_name("欧阳娜娜"), mask_name("Wang Fang")) == ("王*", "欧***", "W***")


def test_describe_quotes_codes_only() -> None:
    assert describe("WAIT_SELLER_AGREE") == "'WAIT_SELLER_AGREE'"
    assert describe("12.345") == "'12.345'"
    assert describe("王芳") == "a string of 2 characters"
    assert describe("13812345678") == "a string of 11 characters"  # digits enough to be a phone
    assert describe("wang@example.com") == "a string of 16 characters"
    assert describe({"a": 1}) == "an object" and describe([1, 2]) == "a list of 2 items"
    assert describe(13812345678) == "a number of 11 characters"


def test_error_text_keeps_codes_and_loses_data() -> None:
    text = "invalid literal for int() with base 10: '王芳' (field 'external_id', 13812345678, 杭州市西湖区)"
    out = scrub_error_text(text)
    assert out == "invalid literal for int() with base 10: '<2 chars>' (field 'external_id', 138****5678, <…>)"


def _raise_nested() -> None:
    try:
        int("王芳 杭州市西湖区文三路90号")
    except ValueError as err:
        raise RuntimeError("while mapping customer 13812345678") from err


def test_a_traceback_keeps_frames_and_loses_the_data() -> None:
    with pytest.raises(RuntimeError) as info:
        _raise_nested()
    text = format_exception(info.value)
    assert "Traceback (most recent call last):" in text and "_raise_nested" in text
    assert "The above exception was the direct cause" in text
    assert text.rstrip().endswith("RuntimeError: while mapping customer 138****5678")
    for clear in ("王芳", "文三路", "13812345678"):
        assert clear not in text
    assert error_summary(info.value) == "RuntimeError"  # raised outside the project's code


def test_an_error_summary_names_the_type_and_the_project_frame() -> None:
    cipher = PiiCipher(os.urandom(32))
    with pytest.raises(ValueError) as info:
        cipher.decrypt("v1:0badc0de:AAAA")
    assert re.fullmatch(r"ValueError in hub/pii\.py:\d+", error_summary(info.value))


def test_logs_scrub_tracebacks_from_the_hub_and_from_libraries() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        try:
            _raise_nested()
        except RuntimeError as err:
            structlog.get_logger("t").error("event failed", exc_info=err, display_name="王芳")
            logging.getLogger("aiohttp.server").error("Error handling request", exc_info=err)
    finally:
        logs.configure("warning", "json")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["event failed", "Error handling request"]
    assert all("Traceback" in line["exception"] for line in lines)
    assert lines[0]["display_name"] == "王*"
    for clear in ("王芳", "文三路", "13812345678"):
        assert clear not in out.getvalue()


def test_a_message_repeated_is_counted_not_written() -> None:
    clock = [0.0]
    limiter = logs.RepeatLimiter(limit=3, window=60, clock=lambda: clock[0])
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        structlog.configure(processors=[structlog.processors.add_log_level, limiter,
                                        structlog.processors.JSONRenderer()],
                            logger_factory=structlog.PrintLoggerFactory(out))
        log = structlog.get_logger("t")
        for i in range(100):
            log.warning("inbox write failed", n=i)
        log.warning("another message")
        clock[0] = 61.0
        log.warning("inbox write failed", n=100)
    finally:
        logs.configure("warning", "json")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("n") for line in lines] == [0, 1, 2, None, 100]
    assert lines[-1]["suppressed"] == 97
