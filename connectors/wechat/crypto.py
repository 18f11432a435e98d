"""WeChat message-push signatures and safe-mode encryption (WXBizMsgCrypt).

References: the mini-program message-push page
https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.html
("消息解密方式为安全模式"), the official WXBizMsgCrypt sample, and wechatpy's
``crypto/base.py`` / ``pkcs7.py`` (docs/platforms.md §3.1, vectors V3–V8):

- ``signature = sha1(sorted([token, timestamp, nonce]) joined)`` (lower-case hex);
  in safe mode ``msg_signature`` adds the ``Encrypt`` text to the sorted list.
- ``AESKey = base64(EncodingAESKey + "=")`` (32 bytes); AES-256-CBC with
  IV = AESKey[:16]; PKCS#7 padding to **32-byte** blocks.
- plaintext = random(16) + len(msg) as 4 bytes big-endian + msg + appid; the
  appid trailer must be our own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from connectors.signing import same_signature
from hub.errors import PayloadError, VerificationError

BLOCK = 32


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_signature(given: str | None, *parts: str, what: str = "signature") -> None:
    if not given:
        raise VerificationError(f"{what} is missing")
    if not same_signature(given.lower(), signature(*parts)):
        raise VerificationError(f"{what} does not match")


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key from the 43-character EncodingAESKey."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as err:
        raise ValueError("EncodingAESKey must be 43 characters of base64") from err
    if len(encoding_aes_key) != 43 or len(key) != 32:
        raise ValueError("EncodingAESKey must be 43 characters of base64 (32 bytes)")
    return key


class WxCrypto:
    def __init__(self, token: str, encoding_aes_key: str, app_id: str):
        self.token = token
        self.key = aes_key(encoding_aes_key)
        self.app_id = app_id.encode()

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``Encrypt``; PayloadError if it does not open,
        VerificationError if it was sealed for another app."""
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError("Encrypt is not base64") from None
        if not raw or len(raw) % 16:
            raise PayloadError("Encrypt is not a whole number of AES blocks")
        dec = self._cipher().decryptor()
        plain = dec.update(raw) + dec.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise PayloadError("Encrypt does not decrypt: bad padding (wrong EncodingAESKey?)")
        body = plain[:-pad]
        if len(body) < 20:
            raise PayloadError("Encrypt is too short to hold a message")
        (length,) = struct.unpack(">I", body[16:20])
        msg, app_id = body[20:20 + length], body[20 + length:]
        if len(msg) != length:
            raise PayloadError("Encrypt's message length does not match its content")
        if not hmac.compare_digest(app_id, self.app_id):
            raise VerificationError("message was encrypted for another appid")
        return msg

    def encrypt(self, msg: bytes, random16: bytes | None = None) -> str:
        rnd = random16 if random16 is not None else os.urandom(16)
        body = rnd + struct.pack(">I", len(msg)) + msg + self.app_id
        pad = BLOCK - len(body) % BLOCK
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(body + bytes([pad]) * pad) + enc.finalize()).decode()

    def msg_signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)
