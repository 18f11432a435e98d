"""WeChat signatures and safe mode against WeChat's own published vectors
(docs/platforms.md V3–V7) and the failures a forged message must meet."""

from __future__ import annotations

import pytest

from connectors.wechat.crypto import WxCrypto, check_signature, signature
from hub.errors import PayloadError, VerificationError

# V5: the mini-program message-push page, "消息解密方式为安全模式" (JSON).
V5_ENCRYPT = ("+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcv"
              "ZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3F"
              "n2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSe"
              "OBrebufAlr7F9mFUPAJGj04=")
V5_MSG = (b'{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
          b'"CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}')
# V7: the classic WXBizMsgCrypt sample (XML).
V7_ENCRYPT = ("hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PG"
              "HQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6"
              "tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp"
              "3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhv"
              "Ql+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")


def v5() -> WxCrypto:
    return WxCrypto("AAAAA", "A" * 43, "wxba5fad812f8e6fb9")


def test_url_verification_and_plain_signatures() -> None:
    assert signature("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"  # V3
    assert signature("AAAAA", "1714037059", "486452656") == "899cf89e464efb63f54ddac96b0a0a235f53aa78"   # V4


def test_safe_mode_json_message_decrypts_and_verifies() -> None:
    crypto = v5()
    assert crypto.msg_signature("1714112445", "415670741", V5_ENCRYPT) == "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
    check_signature("6c5c811b55cc85e0e1b54100749188c20beb3f5d", "AAAAA", "1714112445", "415670741")
    assert crypto.decrypt(V5_ENCRYPT) == V5_MSG


def test_safe_mode_reply_encrypts_like_wechat() -> None:
    crypto = v5()
    enc = crypto.encrypt(b'{"demo_resp":"good luck"}', random16=b"707722b803182950")  # V6
    assert enc == ("ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==")
    assert crypto.msg_signature("1713424427", "415670741", enc) == "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
    assert crypto.decrypt(enc) == b'{"demo_resp":"good luck"}'


def test_classic_xml_sample_decrypts() -> None:
    crypto = WxCrypto("spamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx2c2769f8efd9abc2")
    assert crypto.msg_signature("1409735669", "1320562132", V7_ENCRYPT) == "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
    msg = crypto.decrypt(V7_ENCRYPT).decode()
    assert "<Content><![CDATA[abcdteT]]></Content>" in msg and "6054768590064713728" in msg


def test_forgeries_fail_clearly() -> None:
    crypto = v5()
    with pytest.raises(VerificationError, match="does not match"):
        check_signature("0" * 40, "AAAAA", "1714112445", "415670741", V5_ENCRYPT, what="msg_signature")
    with pytest.raises(VerificationError, match="another appid"):
        WxCrypto("AAAAA", "A" * 43, "wx0000000000000000").decrypt(V5_ENCRYPT)
    with pytest.raises(PayloadError, match="bad padding"):
        WxCrypto("AAAAA", "B" * 43, "wxba5fad812f8e6fb9").decrypt(V5_ENCRYPT)
    with pytest.raises(PayloadError, match="not base64"):
        crypto.decrypt("%%%")
    with pytest.raises(ValueError, match="43 characters"):
        WxCrypto("t", "short", "wx")
