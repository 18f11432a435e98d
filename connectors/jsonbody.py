"""Shared helper: parse a JSON request body or refuse it with a precise 400."""

from __future__ import annotations

from typing import Any

import orjson

from hub.errors import PayloadError


def parse_json_object(body: bytes) -> tuple[str, dict[str, Any]]:
    """Body bytes → (text, object). Refuses non-UTF-8, broken JSON and non-objects."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PayloadError(f"body is not UTF-8 (byte {err.start})") from None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise PayloadError(f"body is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"body must be a JSON object, got {type(doc).__name__}")
    return text, doc
