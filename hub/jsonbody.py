"""Shared helper: parse a JSON request body or refuse it with a precise 400."""

from __future__ import annotations

from typing import Any

import orjson

from hub.errors import PayloadError


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Body bytes → object. Refuses non-UTF-8, broken JSON and non-objects.

    orjson checks the UTF-8 itself, so a body that parses can be stored as the
    bytes it came in (no decode on the ingest path)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if "UTF-8" in str(err):
            raise PayloadError(f"body is not UTF-8: {err}") from None
        raise PayloadError(f"body is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"body must be a JSON object, got {type(doc).__name__}")
    return doc
