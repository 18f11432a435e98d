"""The TOP client: the platform's signing for every sign method (fixed vectors),
its envelopes, and its error codes sorted into wait / stop / retry."""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connectors.taobao.client import TopClient, classify_error, response_key, sign, sign_string
from hub.errors import SourceAuthError, SourceRejected, SourceThrottled, SourceTransient

# The worked example of open.taobao.com docId=101617 (docs/platforms.md V1).
V1_PARAMS = {
    "method": "taobao.item.seller.get", "app_key": "12345678", "session": "test",
    "timestamp": "2016-01-01 12:00:00", "format": "json", "v": "2.0", "sign_method": "md5",
    "fields": "num_iid,title,nick,price,num", "num_iid": "11223344",
}
V1_STRING = ("app_key12345678fieldsnum_iid,title,nick,price,numformatjsonmethodtaobao.item.seller.get"
             "num_iid11223344sessiontestsign_methodmd5timestamp2016-01-01 12:00:00v2.0")


def test_sign_string_is_the_documented_concatenation() -> None:
    assert sign_string(V1_PARAMS) == V1_STRING
    # sign itself and empty values are not signed (official Java SDK signTopRequest)
    assert sign_string(V1_PARAMS | {"sign": "X", "partner_id": ""}) == V1_STRING


def test_md5_matches_the_published_vector() -> None:
    assert sign(V1_PARAMS, "helloworld", "md5") == "66987CB115214E59E6EC978214934FB8"


@pytest.mark.parametrize(("method", "expected"), [
    # Computed with `openssl dgst -md5 -hmac helloworld` / `-sha256 -hmac` over the
    # same documented string (with its sign_method value), an implementation independent of ours.
    ("hmac", "D56D7858309C31B6251083A874D48273"),
    ("hmac-sha256", "04DB15AD0774D5CFCE2C837DE43E3FCEA9011ED74F3038FB6AB5F3C4CEA119E8"),
])
def test_hmac_methods_match_fixed_vectors(method: str, expected: str) -> None:
    assert sign(V1_PARAMS | {"sign_method": method}, "helloworld", method) == expected


def test_unknown_sign_method_is_refused() -> None:
    with pytest.raises(ValueError, match="sign_method"):
        sign(V1_PARAMS, "helloworld", "sha1")


def test_response_key_follows_the_method_name() -> None:
    assert response_key("taobao.refunds.receive.get") == "refunds_receive_get_response"
    assert response_key("tmall.dispute.receive.get") == "tmall_dispute_receive_get_response"


@pytest.mark.parametrize(("body", "kind", "retry_after"), [
    ({"code": 7, "msg": "App Call Limited", "sub_code": "accesscontrol.limited-by-app-access-count",
      "sub_msg": "This ban will last for 3 more seconds"}, SourceThrottled, 3.0),
    ({"code": 15, "msg": "Remote service error", "sub_code": "accesscontrol.limited-by-api-access-count"},
     SourceThrottled, 1.0),
    ({"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey"}, SourceAuthError, None),
    ({"code": 25, "msg": "Invalid signature"}, SourceAuthError, None),
    ({"code": 29, "msg": "Invalid app Key"}, SourceAuthError, None),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isp.top-remote-connection-timeout"},
     SourceTransient, None),
    ({"code": 10, "msg": "Service Currently Unavailable"}, SourceTransient, None),
    ({"code": 15, "msg": "Remote service error", "sub_code": "isv.refund-not-exist", "sub_msg": "退款单不存在"},
     SourceRejected, None),
])
def test_error_responses_are_sorted(body: dict, kind: type, retry_after: float | None) -> None:
    err = classify_error(body)
    assert type(err) is kind
    assert f"TOP error {body['code']}" in str(err) and body["msg"] in str(err)
    if retry_after is not None:
        assert isinstance(err, SourceThrottled) and err.retry_after == retry_after


@respx.mock
async def test_call_posts_a_signed_form_and_unwraps_the_answer() -> None:
    route = respx.post("https://gw.example/router/rest").mock(return_value=httpx.Response(200, json={
        "refund_get_response": {"refund": {"refund_id": 181784773340365852, "status": "SUCCESS"}}}))
    client = TopClient("https://gw.example/router/rest", "12345678", "s3cret", "sess",
                       sign_method="hmac-sha256")
    try:
        got = await client.call("taobao.refund.get", refund_id=181784773340365852, fields="refund_id,status")
    finally:
        await client.aclose()
    assert got["refund"]["refund_id"] == 181784773340365852  # past 2^53, still exact
    form = {k: v[0] for k, v in parse_qs(route.calls[0].request.content.decode()).items()}
    assert form["method"] == "taobao.refund.get" and form["v"] == "2.0" and form["format"] == "json"
    assert form["session"] == "sess" and form["sign_method"] == "hmac-sha256"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", form["timestamp"])
    assert form["sign"] == sign(form, "s3cret", "hmac-sha256")


@respx.mock
async def test_transient_errors_are_retried_then_succeed() -> None:
    respx.post("https://gw.example/router/rest").mock(side_effect=[
        httpx.Response(200, json={"error_response": {"code": 15, "msg": "Remote service error",
                                                     "sub_code": "isp.top-remote-service-unavailable"}}),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json={"refund_get_response": {"refund": {"refund_id": 1}}}),
    ])
    client = TopClient("https://gw.example/router/rest", "k", "s", "sess", attempts=3)
    try:
        assert (await client.call("taobao.refund.get", refund_id=1))["refund"] == {"refund_id": 1}
    finally:
        await client.aclose()


@respx.mock
async def test_refused_credentials_are_not_retried() -> None:
    route = respx.post("https://gw.example/router/rest").mock(return_value=httpx.Response(200, json={
        "error_response": {"code": 27, "msg": "Invalid session", "sub_code": "invalid-sessionkey",
                           "sub_msg": "SessionKey非法或已过期"}}))
    client = TopClient("https://gw.example/router/rest", "k", "s", "sess", attempts=3)
    try:
        with pytest.raises(SourceAuthError, match="SessionKey非法或已过期"):
            await client.call("taobao.refunds.receive.get", fields="refund_id")
    finally:
        await client.aclose()
    assert route.call_count == 1


@respx.mock
async def test_a_body_that_is_not_json_is_a_transient_failure() -> None:
    respx.post("https://gw.example/router/rest").mock(return_value=httpx.Response(200, text="<html>"))
    client = TopClient("https://gw.example/router/rest", "k", "s", "sess", attempts=1)
    try:
        with pytest.raises(SourceTransient, match="not JSON"):
            await client.call("taobao.refund.get", refund_id=1)
    finally:
        await client.aclose()
