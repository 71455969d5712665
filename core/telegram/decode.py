"""Telegram updates ↔ the pipeline: which chat and album an update belongs to, the journal's privacy form, and
:class:`core.contract.chat.Incoming` events (an implementation of :class:`core.pipeline.handler.UpdateCodec`).

Photos (largest size) and images sent as files (full resolution) become lazily downloaded photos (``file_id``
references: the bytes are fetched into memory only when a plugin reads them); files over
``telegram.max_file_mb`` are refused before any download; animations, videos and stickers get a clear answer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telegram import Message, Update
from telegram import User as TgUser

from core.contract.chat import Chat, Incoming, JoinRequest, Photo, User, VideoNote
from core.contract.i18n import resolve_language
from core.infra.images import DOCUMENT_MIME_TYPES, DOCUMENT_SUFFIXES, IMAGE_SUFFIXES
from core.pipeline.handler import WITHHELD, WITHHELD_FIELDS, Decoded

if TYPE_CHECKING:
    from core.pipeline.journal import Entry

log = logging.getLogger(__name__)

#: A run of digits as long as an ID or card number: a text holding one is never journaled.
_LONG_NUMBER = re.compile(r"\d{15}")
#: ``answering(chat_id, user_id)``: whether the user is answering a plugin's question (``ctx.expect_text``).
Answering = Callable[[int, int], Awaitable[bool]]
#: ``photo_from_ref(file_id, meta)``: the Bot API facade's lazily downloaded photo.
PhotoFromRef = Callable[[str, dict[str, Any]], Photo]
#: ``video_from_ref(meta)``: the Bot API facade's lazily downloaded video note (or video).
VideoFromRef = Callable[[dict[str, Any]], VideoNote]


class TelegramCodec:
    """The translation of Telegram's updates, for one bot (its admins, default language, file size limit)."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        answering: Answering,
        photo_from_ref: PhotoFromRef,
        video_from_ref: VideoFromRef,
    ) -> None:
        self.max_bytes = config["telegram"]["max_file_mb"] * 1024 * 1024
        self.default_language = config["language"]["default"]
        self.admins = set(config["access"]["admins"])
        self.answering = answering
        self.photo_from_ref = photo_from_ref
        self.video_from_ref = video_from_ref

    # ------------------------------------------------------------------ order
    @staticmethod
    def key(update: dict[str, Any]) -> tuple[str | None, str | None]:
        """``(chat, album)`` of an update: messages and button presses are queued per chat (albums by
        ``media_group_id``); edits and anything else have no chat (the intake gives each a queue of its own)."""
        try:
            message = update.get("message")
            if message is not None:
                chat = str(message["chat"]["id"])
                group = message.get("media_group_id")
                return chat, f"{chat}:{group}" if group else None
            request = update.get("chat_join_request")
            if request is not None:  # ordered with the user's private chat, where the bot answers
                return str(request["user_chat_id"]), None
            query = update.get("callback_query")
            if query is not None:
                chat_id = ((query.get("message") or {}).get("chat") or {}).get("id")
                return (str(chat_id) if chat_id is not None else f"user:{query['from']['id']}"), None
        except (KeyError, TypeError, AttributeError):
            log.warning("update %s has an unexpected shape", update.get("update_id"))
        return None, None

    @staticmethod
    def kind(update: dict[str, Any]) -> str:
        return next((k for k in update if k not in ("update_id", WITHHELD)), "unknown")

    # ------------------------------------------------------------------ the journal's form
    async def journal_form(self, update: dict[str, Any]) -> dict[str, Any]:
        """What the journal keeps of ``update``: no names (first names blanked, last names and usernames
        dropped), no quoted message, only the ids of an edited message or of the message under a pressed
        button, and no text that answers a plugin's question (``ctx.expect_text``: a name and an ID number
        for WeBank) or holds a long number — such a text is left out and :data:`WITHHELD` set; after a restart
        the user is asked to send it again."""
        form = copy.deepcopy(update)
        _blank_names(form)
        if isinstance(form.get("chat_join_request"), dict):
            form["chat_join_request"].pop("bio", None)  # the user's own words: nothing the bot needs
        for inner in (form.get("edited_message"), (form.get("callback_query") or {}).get("message")):
            if isinstance(inner, dict):
                keep = ("message_id", "date", "chat", "from", "edit_date")
                for name in [k for k in inner if k not in keep]:
                    del inner[name]
        message = form.get("message")
        if isinstance(message, dict):
            message.pop("reply_to_message", None)
            text = message.get("text") or ""
            caption = message.get("caption") or ""
            personal = bool(_LONG_NUMBER.search(text) or _LONG_NUMBER.search(caption))
            if text and not text.startswith("/") and not personal:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    chat_id, user_id = int(message["chat"]["id"]), int((message.get("from") or {})["id"])
                    personal = await self.answering(chat_id, user_id)
            if personal:
                for name in WITHHELD_FIELDS:
                    message.pop(name, None)
                form[WITHHELD] = True
        return form

    # ------------------------------------------------------------------ meaning
    def decode(self, entries: list[Entry]) -> Decoded:
        """What one journaled update (or the updates of one album) means."""
        updates = [Update.de_json(entry.body, None) for entry in entries]
        update = updates[0]
        chat = update.effective_chat
        decoded = Decoded(
            chat_id=chat.id if chat is not None else None, language=self.user(update.effective_user).language
        )
        if any(entry.body.get(WITHHELD) for entry in entries):
            decoded.withheld = True
        elif update.callback_query is not None:
            query = update.callback_query
            decoded.query_id = query.id
            if chat is not None:
                message_id = query.message.message_id if query.message else None
                decoded.incoming = Incoming(
                    self.user(query.from_user),
                    Chat(chat.id, chat.type),
                    "",
                    [],
                    message_id,
                    query.data or "",
                    key=str(update.update_id),
                )
        elif update.chat_join_request is not None:
            request = update.chat_join_request
            join = JoinRequest(
                request.chat.id, request.user_chat_id, request.chat.title or "", request.date.timestamp()
            )
            decoded.incoming = Incoming(
                self.user(request.from_user),
                Chat(request.user_chat_id, "private"),
                key=str(update.update_id),
                join_request=join,
            )
        elif update.message is not None and chat is not None and update.effective_message is not None:
            parts = sorted((self._part(u.message) for u in updates if u.message), key=lambda p: p["message_id"])
            photos = [self.photo_from_ref(p["photo"]["ref"], p["photo"]["meta"]) for p in parts if "photo" in p]
            error = next((p["error"] for p in parts if "error" in p), None)
            video = next((self.video_from_ref(p["video"]) for p in parts if "video" in p), None)
            decoded.incoming = Incoming(
                self.user(update.effective_message.from_user),
                Chat(chat.id, chat.type),
                next((p["text"] for p in parts if p["text"]), ""),
                photos,
                parts[0]["message_id"],
                error=error if not photos else None,
                key=str(update.update_id),
                video=video,
            )
            decoded.notice = error if photos else None
        return decoded

    def user(self, tg_user: TgUser | None) -> User:
        if tg_user is None:
            return User(id=0, language=self.default_language)
        return User(
            id=tg_user.id,
            name=tg_user.first_name or "",
            username=tg_user.username,
            language=resolve_language(tg_user.language_code, self.default_language),
            is_admin=tg_user.id in self.admins,
        )

    def _photo_ref(self, message: Message) -> tuple[str, dict[str, Any]] | str | None:
        """``(file_id, meta)`` of the image in ``message``, an error key when it cannot be used, or None."""
        if message.photo:
            size = message.photo[-1]
            file_id = size.file_id
            meta = {"width": size.width, "height": size.height, "size": size.file_size, "mime_type": "image/jpeg"}
        elif message.animation or message.video or message.video_note or message.sticker:
            return "error.animation"  # checked before documents: Telegram sets `document` on animations too
        elif message.document:
            doc = message.document
            name, mime = doc.file_name or "", doc.mime_type or ""
            readable = mime.startswith("image/") or mime in DOCUMENT_MIME_TYPES
            if not (readable or name.lower().endswith(IMAGE_SUFFIXES + DOCUMENT_SUFFIXES)):
                return "error.not_an_image_file"
            file_id = doc.file_id
            meta = {"size": doc.file_size, "file_name": name, "mime_type": mime, "as_document": True}
        else:
            return None
        if meta.get("size") and meta["size"] > self.max_bytes:
            return "error.file_too_large"
        return file_id, meta

    def _part(self, message: Message) -> dict[str, Any]:
        """One message of an update as plain data (no bytes, no names)."""
        found = self._photo_ref(message)
        part: dict[str, Any] = {"message_id": message.message_id, "text": message.text or message.caption or ""}
        if isinstance(found, str):
            part["error"] = found
        elif found is not None:
            part["photo"] = {"ref": found[0], "meta": found[1]}
        video = message.video_note or message.video or message.animation
        if video is not None:  # for a step waiting for a note (ctx.expect_video); elsewhere the error above stands
            kind = "video_note" if message.video_note else "video" if message.video else "animation"
            length = getattr(video, "length", None) or max(getattr(video, "width", 0), getattr(video, "height", 0))
            part["video"] = {
                "ref": video.file_id,
                "kind": kind,
                "duration": (message.to_dict().get(kind) or {}).get("duration"),  # seconds, as Telegram sent them
                "length": length or None,
                "size": video.file_size,
                "forwarded": message.forward_origin is not None,
                "sent_at": message.date.timestamp() if message.date else None,
            }
        return part


def _blank_names(value: Any) -> None:
    """Blank first names and drop last names and usernames everywhere in a Telegram JSON value."""
    if isinstance(value, dict):
        if "first_name" in value:
            value["first_name"] = ""
        value.pop("last_name", None)
        value.pop("username", None)
        for item in value.values():
            _blank_names(item)
    elif isinstance(value, list):
        for item in value:
            _blank_names(item)
