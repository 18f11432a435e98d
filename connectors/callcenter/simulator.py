"""A simulated 400 line: places calls and pushes each call's CDR the way
Tencent Cloud Contact Center does (``?action=cdr&version=1``, JSON, HTTP
Basic, ``X-TCCC-PUSH-UUID``), then the recording (``action=record``)."""

from __future__ import annotations

import base64
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

END_STATUS = ["正常结束", "用户放弃", "排队超时", "座席未接"]


@dataclass
class CallCenterSimulator:
    url: str
    username: str
    password: str
    hotline: str = "4008001234"
    sdk_app_id: int = 1400000001
    rng: random.Random = field(default_factory=lambda: random.Random(17))

    def cdr(self, caller: str, *, complaint: bool = False, order_no: str | None = None,
            inbound: bool = True, answered: bool = True) -> dict[str, Any]:
        start = int(time.time()) - self.rng.randint(60, 600)
        accept = start + self.rng.randint(3, 30) if answered else 0
        ended = (accept or start) + self.rng.randint(20, 400)
        keys = ["1" if complaint else "2"]
        keys_ex = [{"Key": keys[0], "Label": "投诉" if complaint else "售后咨询"}]
        if order_no:
            keys.append(order_no)
            keys_ex.append({"Key": order_no, "Label": "订单号"})
        return {
            "SdkAppId": self.sdk_app_id, "SessionId": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "Caller": caller if inbound else self.hotline, "Callee": self.hotline if inbound else caller,
            "CallerLocation": "浙江杭州", "Direction": 0 if inbound else 1, "CallType": 2 if inbound else 1,
            "StartTimestamp": start, "QueuedTimestamp": start + 2, "RingTimestamp": start + 3,
            "AcceptTimestamp": accept, "EndedTimestamp": ended, "Duration": ended - accept if accept else 0,
            "IVRDuration": 12, "IVRKeyPressed": keys, "IVRKeyPressedEx": keys_ex,
            "SeatUser": {"UserId": f"agent{self.rng.randint(1, 30)}@shop", "Name": "客服"} if answered else {},
            "HungUpSide": self.rng.choice(["user", "seat"]),
            "EndStatusString": END_STATUS[0] if answered else self.rng.choice(END_STATUS[1:]),
            "RecordId": str(self.rng.getrandbits(48)) if answered else "",
        }

    def _auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    async def push(self, http: aiohttp.ClientSession, record: dict[str, Any], *, action: str = "cdr",
                   push_uuid: str | None = None, auth: str | None = None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json", "Authorization": auth or self._auth(),
                   "X-TCCC-PUSH-UUID": push_uuid or str(uuid.uuid4())}
        async with http.post(self.url, params={"action": action, "version": "1"}, data=orjson.dumps(record),
                             headers=headers) as resp:
            return resp.status, await resp.text()

    def recording(self, cdr: dict[str, Any]) -> dict[str, Any]:
        return {"SdkAppId": self.sdk_app_id, "RecordId": cdr["RecordId"], "SessionId": cdr["SessionId"],
                "Timestamp": cdr["EndedTimestamp"] + 5,
                "RecordURL": f"https://tccc.example/record/{cdr['RecordId']}.mp3"}
