"""AES-GCM sealing of short secrets that must cross a store for a few minutes (a name and an ID number): under a
key derived from the bot token with HMAC-SHA256 and a purpose, so every process of one bot derives the same key
and it is never stored; the associated ``context`` (an update id, a user's chat) binds a value to where it belongs,
so it cannot be replayed elsewhere. Without a token (the console) the key is random per process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Sealer:
    """Seal and open texts with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def for_token(cls, token: str, purpose: bytes) -> Sealer:
        """The sealer of ``purpose`` for the bot whose token is ``token`` (a random key when there is none)."""
        return cls(hmac.new(token.encode(), purpose, hashlib.sha256).digest() if token else os.urandom(32))

    def seal(self, text: str, context: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), context.encode())).decode()

    def open(self, sealed: str, context: str) -> str | None:
        """The text, or None when ``sealed`` is not what :meth:`seal` made for ``context`` with this key."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (ValueError, InvalidTag):
            return None
