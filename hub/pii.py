"""Customers' phones and addresses: encryption at rest, blind index, masking.

- Encryption is AES-256-GCM with a fresh 96-bit nonce per value. Stored form:
  ``v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>``; the key id (first 8 hex
  of SHA-256 of the key) lets a rotated key decrypt old rows.
- The blind index is HMAC-SHA256 of the *normalized* phone under a key derived
  from the PII key (HKDF, separate purpose), so equal phones find each other
  without the number ever being stored or compared in clear.
- Masking is what every role without ``pii`` sees, and what logs print.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import os
import re
import threading
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NON_DIGITS = re.compile(r"[^\d+]")


def normalize_phone(raw: str | None) -> str | None:
    """Mainland numbers to 11 digits (drop +86 / 0086 / 86, spaces, dashes,
    brackets); anything else to ``+<digits>``. None for empty input."""
    if raw is None:
        return None
    s = _NON_DIGITS.sub("", str(raw))
    if not s:
        return None
    if s.startswith("+86"):
        s = s[3:]
    elif s.startswith("0086"):
        s = s[4:]
    elif s.startswith("86") and len(s) == 13:
        s = s[2:]
    if s.startswith("+"):
        return "+" + s[1:].replace("+", "")
    return s.replace("+", "")


def mask_phone(phone: str | None) -> str | None:
    """``13812345678`` → ``138****5678``; short numbers keep only their last 2 digits."""
    if not phone:
        return phone
    p = normalize_phone(phone) or phone
    if len(p) >= 7:
        return p[:3] + "****" + p[-4:]
    return "*" * max(0, len(p) - 2) + p[-2:]


# Phone numbers anywhere in free text, in the ways people write them: a
# mainland mobile (139 1234 5678, 139.1234.5678, (139)12345678, +86-139…) or a
# landline with its area code (0571-8888 6666, (0571)88886666, +86 571 8888 6666).
# One separator (space, dot, dash) may sit between the groups. Linear: no
# nested repetition, so a megabyte of digits costs a megabyte of scanning.
_SEP = r"[\s.\-]?"
_COUNTRY = r"\(?(?:\+|00)?86\)?" + _SEP
PHONE_IN_TEXT = re.compile(
    r"(?<!\d)(?:"
    rf"(?:{_COUNTRY})?(?:\(1[3-9]\d\)|1[3-9]\d){_SEP}\d{{4}}{_SEP}\d{{4}}"                # mobile
    rf"|(?:{_COUNTRY}(?:\(0\))?\(?0?|\(?0)[1-9]\d{{1,2}}\)?{_SEP}\d{{3,4}}{_SEP}\d{{4}}"  # landline
    r")(?!\d)")
EMAIL_IN_TEXT = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


# Chinese input methods type full-width digits and brackets; they are found
# on a folded copy (same length, so positions carry over to the original).
_FULLWIDTH = str.maketrans("０１２３４５６７８９＋（）－．　", "0123456789+()-. ")


def mask_phones_in(text: str) -> str:
    """Free text (a chat message, a description) with every phone number masked."""
    folded = text if text.isascii() else text.translate(_FULLWIDTH)
    out: list[str] = []
    last = 0
    for m in PHONE_IN_TEXT.finditer(folded):
        out += [text[last:m.start()], mask_phone(m.group(0)) or ""]
        last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def mask_contacts_in(text: str) -> str:
    """Free text with every phone number and e-mail address masked (what logs print)."""
    return EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)) or "", mask_phones_in(text))


def mask_name(name: str | None) -> str | None:
    """``王芳`` → ``王*``, ``欧阳娜娜`` → ``欧***``: the first character, never the whole name."""
    if not name:
        return name
    name = name.strip()
    return name[:1] + "*" * min(3, max(1, len(name) - 1))


def mask_address(address: str | None) -> str | None:
    """Keep the first 6 characters (province/city), hide the rest."""
    if not address:
        return address
    return address[:6] + "****" if len(address) > 6 else "****"


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if local else "***@" + domain


class _NoncePool:
    """Random 96-bit AES-GCM nonces, read from the OS 1,024 at a time.

    os.urandom() per message lets go of the GIL, which costs a thread switch
    whenever another thread waits for it (40 µs instead of 0.6 µs beside a
    busy thread). Nonces stay uniformly random; a forked child starts with a
    fresh pool so it can never repeat its parent's.
    """

    SIZE = 12
    BATCH = 1024

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            if self._pos >= len(self._buf):
                self._buf, self._pos = os.urandom(self.SIZE * self.BATCH), 0
            nonce = self._buf[self._pos:self._pos + self.SIZE]
            self._pos += self.SIZE
            return nonce

    def reset(self) -> None:
        self._buf, self._pos, self._lock = b"", 0, threading.Lock()


_nonces = _NoncePool()
os.register_at_fork(after_in_child=_nonces.reset)


class PiiCipher:
    """Encrypts, decrypts and blind-indexes PII under one configured key
    (plus older keys kept for decryption after a rotation)."""

    def __init__(self, key: bytes, old_keys: list[bytes] | None = None):
        """``old_keys``: earlier keys, oldest first, kept to read what they sealed."""
        if len(key) != 32 or any(len(k) != 32 for k in old_keys or []):
            raise ValueError("PII key must be 32 bytes")
        self._current = (self.key_id(key), AESGCM(key))
        self._by_id = {self.key_id(k): AESGCM(k) for k in [key, *(old_keys or [])]}
        # The blind index stays keyed by the first key ever used: a rotation must
        # not make a known phone look new (that would split its customer in two).
        first = (old_keys or [key])[0]
        self._index_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hub blind index v1"
        ).derive(first)

    # ciphertext → clear text, and phone → blind index, in a remembering copy
    _memo: dict[str, str] | None = None
    _indexes: dict[str, str | None] | None = None

    def remembering(self) -> PiiCipher:
        """A copy that remembers what it sealed, opened and indexed, for one
        pipeline batch: a customer's phone and address are opened again for
        every push that shows them, and each opening is an AES-GCM call. Kept
        for the batch only: clear text lives no longer than the batch does."""
        twin = copy.copy(self)
        twin._memo, twin._indexes = {}, {}
        return twin

    @classmethod
    def from_config(cls, security: Any) -> PiiCipher:
        """From the config's ``security`` section: pii_key and previous_pii_keys."""
        return cls(base64.b64decode(security.pii_key.get_secret_value()),
                   [base64.b64decode(k.get_secret_value()) for k in security.previous_pii_keys])

    @classmethod
    def from_base64(cls, key_b64: str) -> PiiCipher:
        return cls(base64.b64decode(key_b64))

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()[:8]

    def encrypt(self, plain: str | None) -> str | None:
        if plain is None or plain == "":
            return None
        stored = self._seal(plain.encode("utf-8"))
        if self._memo is not None:
            self._memo[stored] = plain
        return stored

    def _seal(self, data: bytes) -> str:
        kid, aead = self._current
        nonce = _nonces.take()
        ct = aead.encrypt(nonce, data, kid.encode())
        return f"v1:{kid}:{binascii.b2a_base64(nonce + ct, newline=False).decode()}"

    def decrypt(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        if self._memo is not None:
            plain = self._memo.get(stored)
            if plain is None:
                plain = self._memo[stored] = self._open(stored)
            return plain
        return self._open(stored)

    def _open(self, stored: str) -> str:
        version, kid, data = stored.split(":", 2)
        if version != "v1" or kid not in self._by_id:
            raise ValueError(f"cannot decrypt PII sealed with key {kid!r}")
        raw = base64.b64decode(data)
        return self._by_id[kid].decrypt(raw[:12], raw[12:], kid.encode()).decode("utf-8")

    def seal_body(self, body: str | bytes) -> str:
        """A raw event body (UTF-8 text, or its bytes as received) as stored in
        the inbox: sealed, unless empty."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        return self._seal(data) if data else ""

    def open_body(self, stored: str) -> str:
        return (self.decrypt(stored) or "") if stored.startswith("v1:") else stored

    def blind_index(self, phone: str | None) -> str | None:
        if self._indexes is not None and phone is not None:
            if phone not in self._indexes:
                self._indexes[phone] = self._index(phone)
            return self._indexes[phone]
        return self._index(phone)

    def _index(self, phone: str | None) -> str | None:
        norm = normalize_phone(phone)
        if not norm:
            return None
        return hmac.new(self._index_key, norm.encode(), hashlib.sha256).hexdigest()
