"""The one place where deep-link payloads and callback data are packed and unpacked.

Both travel through the user's Telegram client, so both are checked on the way back:

- **callback data** (the data of a button the bot sent): ``<command>:<data>``, at most 64 bytes (Telegram's
  limit). A modified client can send any data with a button press.
- **deep-link payloads** (``https://t.me/<bot>?start=<payload>``): ``<command>-<payload>``, at most 64
  characters of ``A-Za-z0-9_-`` (Telegram's limit). Anyone can type ``/start anything``.

A command whose data must not be forged sets ``Command.signed``: its buttons carry ``<command>:<data>:<mac>``
and its links ``<command>-<payload>-<mac>`` (a 48-bit HMAC), and its ``on_callback`` / ``on_deep_link`` see
only data the bot issued; anything else is answered like an expired button or an unknown link. Unsigned
data suits links meant to be typed or shared, and data that is checked anyway (realname's session ids are
unguessable and checked against the owner); it leaves more room for the plugin's data.

The key is derived from the bot token (stable across restarts and shared by every process of one bot, never
stored); without a token (the console) it is random per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

CALLBACK_MAX_BYTES = 64
DEEP_LINK_MAX = 64
_DEEP_LINK = re.compile(r"^[A-Za-z0-9_-]*$")
_MAC_CHARS = 8  # 6 bytes, base64url


@dataclass(frozen=True)
class Packed:
    """What came back: the command it is for and the plugin's own data."""

    command: str
    data: str


class Codec:
    """Packs and checks callback data and deep-link payloads with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_token(cls, token: str) -> Codec:
        """The codec of the bot with ``token`` (random key when there is none)."""
        if not token:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(token.encode(), b"aipbot wire formats v1", hashlib.sha256).digest())

    def _mac(self, kind: str, command: str, data: str) -> str:
        digest = hmac.new(self._key, f"{kind}\0{command}\0{data}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:6]).decode()

    # ------------------------------------------------------------------ callback data
    def callback(self, command: str, data: str, *, signed: bool = False) -> str:
        """Callback data for a button of ``command``; ``ValueError`` when it would exceed 64 bytes."""
        packed = f"{command}:{data}" + (f":{self._mac('cb', command, data)}" if signed else "")
        if len(packed.encode()) > CALLBACK_MAX_BYTES:
            room = CALLBACK_MAX_BYTES - len(command.encode()) - 1 - (_MAC_CHARS + 1 if signed else 0)
            raise ValueError(f"button data for /{command} is over {room} bytes: {data[:20]!r}…")
        return packed

    def open_callback(self, raw: str, signed: dict[str, bool]) -> Packed | None:
        """The command and data of a button press, or None when it is malformed, unknown or forged.

        ``signed``: command name → whether its data carries a MAC.
        """
        return self._open("cb", ":", raw, signed)

    # ------------------------------------------------------------------ deep links
    def deep_link(self, command: str, payload: str, *, signed: bool = False) -> str:
        """The ``/start`` payload for ``command``; ``ValueError`` when it breaks Telegram's rules."""
        if not _DEEP_LINK.match(payload):
            raise ValueError(f"deep-link payload for /{command} may only use A-Z a-z 0-9 _ -")
        packed = f"{command}-{payload}" + (f"-{self._mac('dl', command, payload)}" if signed else "")
        if len(packed) > DEEP_LINK_MAX:
            raise ValueError(f"deep-link payload for /{command} is too long ({len(packed)} > {DEEP_LINK_MAX})")
        return packed

    def open_deep_link(self, raw: str, signed: dict[str, bool]) -> Packed | None:
        """The command and payload of ``/start <raw>``, or None when it is malformed, unknown or forged.

        ``signed``: command name → whether its payloads carry a MAC.
        """
        return self._open("dl", "-", raw, signed)  # an unsigned command checks its own payloads

    def _open(self, kind: str, separator: str, raw: str, signed: dict[str, bool]) -> Packed | None:
        command, sep, data = raw.partition(separator)
        if not sep or command not in signed:
            return None
        if signed[command]:
            data, sep, mac = data.rpartition(separator)
            if not sep or not hmac.compare_digest(mac, self._mac(kind, command, data)):
                return None
        return Packed(command, data)
