"""Standard Webhooks signing against the spec's published example."""

from __future__ import annotations

import pytest

from hub import standard_webhooks as sw
from hub.errors import VerificationError

# From the Standard Webhooks reference libraries' test suite.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_published_vector() -> None:
    assert sw.sign(sw.decode_secret(SECRET), MSG_ID, TS, BODY) == EXPECTED


def test_verify_accepts_any_listed_signature_and_rotated_keys() -> None:
    key = sw.decode_secret(SECRET)
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TS),
               "webhook-signature": "v1,bm90IGl0 " + EXPECTED}
    assert sw.verify([b"x" * 32, key], headers, BODY, now=TS + 10) == MSG_ID


@pytest.mark.parametrize(("change", "message"), [
    ({"webhook-timestamp": str(TS - 400)}, "too old"),
    ({"webhook-timestamp": str(TS + 400)}, "in the future"),
    ({"webhook-timestamp": "yesterday"}, "not an integer"),
    ({"webhook-signature": "v2,abc"}, "no v1 signature"),
    ({"webhook-id": "msg_other"}, "does not match"),
])
def test_verify_refusals(change: dict[str, str], message: str) -> None:
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TS), "webhook-signature": EXPECTED} | change
    with pytest.raises(VerificationError, match=message):
        sw.verify([sw.decode_secret(SECRET)], headers, BODY, now=TS)
