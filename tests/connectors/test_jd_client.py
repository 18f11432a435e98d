"""The JOS client: JD's md5 signing (published vector), its envelopes with the
``_responce`` spelling and string error codes, sorted into wait / stop / retry."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import respx

from connectors.jd.client import (
    JosClient,
    JosErrorCodes,
    classify_error,
    jos_timestamp,
    param_json,
    sign,
)
from hub.errors import SourceAuthError, SourceRejected, SourceThrottled, SourceTransient

V2_PARAMS = {
    "360buy_param_json": '{"end_date":null,"optional_fields":null,"order_state":"WAIT_SELLER_STOCK_OUT",'
                         '"page":"1","page_size":"200","start_date":null}',
    "access_token": "yourtoken", "app_key": "yourappkey", "method": "jingdong.pop.order.search",
    "timestamp": "2021-05-07 09:20:39.683+0800", "v": "2.0",
}


def test_md5_matches_the_published_vector() -> None:
    assert sign(V2_PARAMS, "yourappSecret") == "D70825340F4084360B9362B60DFD7930"


def test_param_json_sorts_keys_and_keeps_chinese() -> None:
    assert param_json({"b": 1, "a": "退货", "c": None}) == '{"a":"退货","b":1}'


def test_timestamp_is_beijing_time_with_milliseconds() -> None:
    assert jos_timestamp(datetime(2021, 5, 7, 1, 20, 39, 683000, tzinfo=UTC)) == "2021-05-07 09:20:39.683+0800"


@pytest.mark.parametrize(("body", "kind"), [
    ({"code": "19", "zh_desc": "无效access_token", "en_desc": "Invalid access_token"}, SourceAuthError),
    ({"code": "12", "zh_desc": "无效签名"}, SourceAuthError),
    ({"code": "67", "zh_desc": "调用次数超限"}, SourceThrottled),
    ({"code": "66", "zh_desc": "平台连接后端服务不可用"}, SourceTransient),
    ({"code": "301", "zh_desc": "参数错误"}, SourceRejected),
])
def test_error_responses_are_sorted(body: dict, kind: type) -> None:
    err = classify_error(body, JosErrorCodes())
    assert type(err) is kind and f"JOS error {body['code']} {body['zh_desc']}" in str(err)


def test_error_codes_are_configurable() -> None:
    assert type(classify_error({"code": "301"}, JosErrorCodes(throttle={"301"}))) is SourceThrottled


@respx.mock
async def test_call_posts_signed_form_and_unwraps_the_responce() -> None:
    route = respx.post("https://jd.example/routerjson").mock(return_value=httpx.Response(200, json={
        "jingdong_asc_query_view_responce": {"code": "0", "result": {"success": True,
                                                                     "data": {"serviceId": 7}}}}))
    client = JosClient("https://jd.example/routerjson", "ak", "sec", "tok")
    try:
        got = await client.call("jingdong.asc.query.view", serviceId=7, buId=None)
    finally:
        await client.aclose()
    assert got["result"]["data"] == {"serviceId": 7}
    form = {k: v[0] for k, v in parse_qs(route.calls[0].request.content.decode()).items()}
    assert orjson.loads(form["360buy_param_json"]) == {"serviceId": 7}
    assert form["access_token"] == "tok" and form["v"] == "2.0" and "sign_method" not in form
    assert form["sign"] == sign(form, "sec")


@respx.mock
async def test_expired_token_is_an_auth_error_and_not_retried() -> None:
    route = respx.post("https://jd.example/routerjson").mock(return_value=httpx.Response(200, json={
        "error_response": {"code": "19", "zh_desc": "无效access_token", "en_desc": "Invalid access_token"}}))
    client = JosClient("https://jd.example/routerjson", "ak", "sec", "tok", attempts=3)
    try:
        with pytest.raises(SourceAuthError, match="无效access_token"):
            await client.call("jingdong.asc.query.list", pageNumber=1)
    finally:
        await client.aclose()
    assert route.call_count == 1
