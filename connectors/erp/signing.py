"""聚水潭 (Jushuitan) open-platform request signing, as a pure function.

``sign = md5(app_secret + k1 + v1 + k2 + v2 …)`` over every form parameter
but ``sign`` itself, keys in byte order, the secret as a prefix only (not a
suffix, unlike Taobao's TOP), lower-case hex. The parameters are
``app_key``, ``access_token``, ``timestamp`` (unix seconds), ``charset``
(``utf-8``), ``version`` (``2``) and ``biz`` (the JSON body).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def jushuitan_sign(app_secret: str, params: Mapping[str, str]) -> str:
    text = app_secret + "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def jushuitan_verify(app_secret: str, params: Mapping[str, str]) -> bool:
    given = params.get("sign", "")
    return hmac.compare_digest(given.lower(), jushuitan_sign(app_secret, params))
