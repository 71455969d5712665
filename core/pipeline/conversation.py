"""Conversations: the commands that wait for a user's next photo or text, kept in the state port.

One conversation per (chat, user) at most, under ``conv:<chat>:<user>``, expiring after
``pending_minutes``. It records which command waits, its arguments, what it waits for (a photo, a text,
or — the router's own — a choice of command for photos already sent), the plugin's step name and its data
(plain JSON), and the photos it keeps, **by reference**: the transport's reference (Telegram's ``file_id``,
which Telegram keeps; a console file path) plus a token for the bytes held in this process's memory.
Nothing of a photo reaches the database. After a restart a photo comes back from its reference; one
without a reference (sent as bytes, as tests do) is gone with the process.

Expiry, ``/cancel`` and replacement are handled here, once: the held bytes are wiped with the
conversation.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from cachetools import TTLCache

from core.contract.chat import Photo
from core.contract.conversation import CHOICE, PHOTO, TEXT, VIDEO, Conversation
from core.infra import keys
from core.infra.state import State

log = logging.getLogger(__name__)

__all__ = ["CHOICE", "PHOTO", "TEXT", "VIDEO", "Conversation", "Conversations", "PhotoSource"]  # the record: contract

#: At most this many bytes of photos held in memory for conversations waiting in this process.
HELD_BYTES = 256 * 1024 * 1024


class PhotoSource(Protocol):
    """A transport that can bring a photo back from its reference (after a restart)."""

    def photo_from_ref(self, ref: str, meta: dict[str, Any]) -> Photo | None: ...


class Conversations:
    """The conversations of every chat, in ``state``; photo bytes in a bounded in-memory table."""

    def __init__(self, state: State, minutes: Callable[[], float], *, max_bytes: int = HELD_BYTES) -> None:
        self.state = state
        self._minutes = minutes
        # bounded by bytes: past the bound the oldest are let go (a conversation then fetches them again by
        # reference; bytes sent without one are gone), so waiting photos never grow memory without limit
        self.held: TTLCache[str, Photo] = TTLCache(
            max_bytes, self.ttl, timer=lambda: state.clock(), getsizeof=lambda photo: max(1, photo.size or 1 << 20)
        )

    @property
    def ttl(self) -> float:
        return self._minutes() * 60

    @staticmethod
    def _key(chat_id: int, user_id: int) -> str:
        return keys.conversation(chat_id, user_id)

    async def get(self, chat_id: int, user_id: int) -> Conversation | None:
        value = await self.state.get(self._key(chat_id, user_id))
        return None if value is None else Conversation.from_json(value)

    async def save(self, chat_id: int, user_id: int, conversation: Conversation, photos: list[Photo]) -> None:
        """Store ``conversation`` (replacing, and wiping, any other) keeping ``photos`` by reference."""
        conversation.photos = [self._hold(photo) for photo in photos]
        old = await self.get(chat_id, user_id)
        await self.state.set(self._key(chat_id, user_id), conversation.to_json(), self.ttl)
        if old is not None:
            self._wipe(old.photos, keep=photos)

    async def take(self, chat_id: int, user_id: int, transport: PhotoSource | None) -> tuple[Conversation, list[Photo]]:
        """Remove the conversation to continue it: it and its photos (brought back from their references)."""
        value = await self.state.delete(self._key(chat_id, user_id))
        conversation = None if value is None else Conversation.from_json(value)
        if conversation is None:
            raise LookupError("no conversation")
        photos = [p for p in (self._restore(ref, transport) for ref in conversation.photos) if p is not None]
        for ref in conversation.photos:  # the handler holds them now; it keeps them again if it still needs them
            self.held.pop(ref.get("mem"), None)
        return conversation, photos

    async def drop(self, chat_id: int, user_id: int) -> Conversation | None:
        """Forget the conversation (``/cancel``, a new command): its photos are wiped."""
        value = await self.state.delete(self._key(chat_id, user_id))
        conversation = None if value is None else Conversation.from_json(value)
        if conversation is not None:
            self._wipe(conversation.photos)
        return conversation

    async def wants_text(self, chat_id: int, user_id: int) -> bool:
        """Whether the user is answering a plugin's question (``ctx.expect_text``) in that chat."""
        conversation = await self.get(chat_id, user_id)
        return conversation is not None and conversation.wants == TEXT

    async def is_current(self, chat_id: int, user_id: int, conversation_id: str) -> bool:
        conversation = await self.get(chat_id, user_id)
        return conversation is not None and conversation.id == conversation_id

    # ------------------------------------------------------------------ photos by reference
    def _hold(self, photo: Photo) -> dict[str, Any]:
        token = secrets.token_hex(8)
        with contextlib.suppress(ValueError):  # larger than the whole bound: kept by its reference only
            self.held[token] = photo
        return {"mem": token, "ref": photo.ref, **photo.meta()}

    def _restore(self, ref: dict[str, Any], transport: PhotoSource | None) -> Photo | None:
        photo = self.held.get(ref.get("mem"))
        if photo is not None and not photo.wiped:
            return photo
        if ref.get("ref") and transport is not None and hasattr(transport, "photo_from_ref"):
            meta = {k: v for k, v in ref.items() if k not in ("mem", "ref")}
            return transport.photo_from_ref(ref["ref"], meta)
        return None

    def _wipe(self, refs: list[dict[str, Any]], keep: list[Photo] | None = None) -> None:
        """Forget the photos of ``refs`` and drop their bytes, except those in ``keep`` (held again)."""
        kept = {id(photo) for photo in keep or []}
        for ref in refs:
            photo = self.held.pop(ref.get("mem"), None)
            if photo is not None and id(photo) not in kept:
                photo.wipe()

    def close(self) -> None:
        """At shutdown: drop every photo held in memory (conversations keep their references)."""
        for photo in self.held.values():
            photo.wipe()
        self.held.clear()
