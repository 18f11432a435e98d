"""Request signing shared by Taobao TOP and JD JOS: both sort the parameters by
name, concatenate name+value with no separators, and digest that with the app
secret — JD's md5 scheme is TOP's ``sign_method=md5`` (docs/platforms.md §1.2, §2.1).
And the one way every connector compares a signature it was given."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any


def sorted_concat(params: Mapping[str, Any]) -> str:
    """Sorted name+value pairs, no separators; ``sign`` and empty values left out
    (the official SDKs never sign an empty value)."""
    return "".join(f"{k}{params[k]}" for k in sorted(params)
                   if k != "sign" and params[k] is not None and params[k] != "")


def md5_wrapped(secret: str, text: str) -> str:
    """upper(md5(secret + text + secret))."""
    return hashlib.md5(f"{secret}{text}{secret}".encode()).hexdigest().upper()


def hmac_hex(secret: str, text: str, digest: str) -> str:
    """upper(hex(HMAC-<digest>(secret, text)))."""
    return hmac.new(secret.encode(), text.encode(), digest).hexdigest().upper()


def same_signature(given: str, expected: str) -> bool:
    """Constant-time comparison of a signature from a request with the one we
    computed. ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters
    (TypeError), and a request may carry anything: compare the UTF-8 bytes."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
