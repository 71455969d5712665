"""The Telegram transport: python-telegram-bot v22 ``Application`` wiring (long polling).

Updates become :class:`core.router.Incoming` events: photos (largest size) and images sent as files
(full resolution) are attached lazily (downloaded into memory only when a plugin reads them); the
photos of an album are collected for ``telegram.album_wait`` seconds and delivered as one event;
files over ``telegram.max_file_mb`` are refused before any download. Updates are handled concurrently,
so one slow job never stalls another user. Replies over 4096 characters are split at line breaks, or
sent as a ``.txt`` file when they would take more than :data:`MAX_SPLIT` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram import User as TgUser
from telegram.constants import ChatAction, MessageLimit
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters
from telegram.helpers import create_deep_linked_url

from core.app import App
from core.chat import Button, Chat, Photo, Reply, User
from core.i18n import resolve_language
from core.images import DOCUMENT_MIME_TYPES, DOCUMENT_SUFFIXES, IMAGE_SUFFIXES
from core.router import Incoming

log = logging.getLogger(__name__)

MAX_SPLIT = 3  # a longer text is sent as a .txt file


def split_text(text: str, limit: int = MessageLimit.MAX_TEXT_LENGTH) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, at line breaks where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:  # a single line longer than a message: cut it hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            pieces.append(current)
            current = ""
        current += line
    if current or not pieces:
        pieces.append(current)
    return [p.rstrip("\n") or p for p in pieces]


def _markup(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.text, url=b.url)
                if b.url
                else InlineKeyboardButton(b.text, callback_data=b.callback_data)
                for b in row
            ]
            for row in rows
        ]
    )


class TelegramTransport:
    """Connects an :class:`App` to Telegram through a PTB ``Application``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config["telegram"]
        self.application: Application = (
            ApplicationBuilder()
            .token(self.config["token"])
            .base_url(self.config["base_url"])
            .base_file_url(self.config["base_file_url"])
            .concurrent_updates(True)
            .post_init(self._post_init)
            .post_shutdown(self._post_shutdown)
            .build()
        )
        self.application.add_handler(CallbackQueryHandler(self._on_callback))
        # new messages only: an edited caption must not run its command again
        self.application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        self.application.add_error_handler(self._on_error)
        self._albums: dict[tuple[int, str], list[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def _post_init(self, application: Application) -> None:
        """After getMe: register the command menu and start the plugins."""
        await self._set_commands()
        self.app.start(self)
        log.info("connected to Telegram as @%s", application.bot.username)

    async def _post_shutdown(self, application: Application) -> None:
        self.app.stop()

    async def _set_commands(self) -> None:
        catalogue = self.app.catalogue
        for lang in ("en", "zh"):
            commands = [
                BotCommand(c.name, catalogue.text(lang, c.help)[:256]) for c in self.app.router.visible_commands()
            ]
            commands += [
                BotCommand("help", catalogue.text(lang, "menu.help")),
                BotCommand("cancel", catalogue.text(lang, "menu.cancel")),
            ]
            try:
                await self.application.bot.set_my_commands(commands, language_code=None if lang == "en" else lang)
            except TelegramError as err:
                log.warning("setMyCommands (%s) failed: %s", lang, err)

    async def start(self) -> None:
        """Start polling in the running event loop (tests; ``run_telegram`` uses ``run_polling``)."""
        await self.application.initialize()
        await self._post_init(self.application)
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(poll_interval=0, timeout=self.config["poll_timeout"])

    async def stop(self) -> None:
        """Stop polling and the plugins; waits for pending album deliveries."""
        assert self.application.updater is not None
        if self.application.updater.running:
            await self.application.updater.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.application.running:
            await self.application.stop()
        await self._post_shutdown(self.application)
        await self.application.shutdown()

    # ------------------------------------------------------------------ incoming
    def _user(self, tg_user: TgUser | None) -> User:
        if tg_user is None:
            return User(id=0)
        return User(
            id=tg_user.id,
            name=tg_user.first_name or "",
            username=tg_user.username,
            language=resolve_language(tg_user.language_code, self.app.config["language"]["default"]),
            is_admin=tg_user.id in self.app.config["access"]["admins"],
        )

    def _photo(self, message: Message) -> Photo | str | None:
        """The image in ``message``, an error key when it cannot be used, or None when there is none."""
        max_bytes = self.config["max_file_mb"] * 1024 * 1024
        bot = self.application.bot
        if message.photo:
            size = message.photo[-1]
            file_id, meta = size.file_id, {"width": size.width, "height": size.height, "size": size.file_size}
            name, mime, as_document = None, "image/jpeg", False
        elif message.animation or message.video or message.video_note or message.sticker:
            return "error.animation"  # checked before documents: Telegram sets `document` on animations too
        elif message.document:
            doc = message.document
            name = doc.file_name or ""
            mime = doc.mime_type or ""
            readable = mime.startswith("image/") or mime in DOCUMENT_MIME_TYPES
            if not (readable or name.lower().endswith(IMAGE_SUFFIXES + DOCUMENT_SUFFIXES)):
                return "error.not_an_image_file"
            file_id, meta, as_document = doc.file_id, {"size": doc.file_size}, True
        else:
            return None
        if meta.get("size") and meta["size"] > max_bytes:
            return "error.file_too_large"

        async def load() -> bytes:
            tg_file = await bot.get_file(file_id)
            if tg_file.file_size and tg_file.file_size > max_bytes:
                from core.errors import BadImage

                raise BadImage("file over the download limit", key="error.file_too_large")
            return bytes(await tg_file.download_as_bytearray())

        return Photo(load, file_name=name, mime_type=mime, as_document=as_document, **meta)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_chat is None:
            return
        if message.media_group_id:
            key = (update.effective_chat.id, message.media_group_id)
            first = key not in self._albums
            self._albums.setdefault(key, []).append(message)
            if first:
                task = asyncio.create_task(self._deliver_album(key, update))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        await self._deliver([message], update)

    async def _deliver_album(self, key: tuple[int, str], update: Update) -> None:
        await asyncio.sleep(self.config["album_wait"])
        messages = sorted(self._albums.pop(key, []), key=lambda m: m.message_id)
        await self._deliver(messages, update)

    async def _deliver(self, messages: Sequence[Message], update: Update) -> None:
        first = messages[0]
        assert update.effective_chat is not None
        chat = Chat(update.effective_chat.id, update.effective_chat.type)
        user = self._user(first.from_user)
        text = next((m.text or m.caption for m in messages if m.text or m.caption), "") or ""
        photos: list[Photo] = []
        error: str | None = None
        for message in messages:
            found = self._photo(message)
            if isinstance(found, str):
                error = error or found
            elif found is not None:
                photos.append(found)
        incoming = Incoming(user, chat, text, photos, first.message_id, error=error if not photos else None)
        if error and photos:
            await self.send(chat.id, Reply(self.app.catalogue.text(user.language, error)))
        await self.app.router.handle(incoming, self)

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        with contextlib.suppress(TelegramError):
            await query.answer()
        chat = update.effective_chat
        if chat is None:
            return
        message_id = query.message.message_id if query.message else None
        incoming = Incoming(self._user(query.from_user), Chat(chat.id, chat.type), "", [], message_id, query.data or "")
        await self.app.router.handle(incoming, self)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error while handling an update", exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat is not None:
            lang = self._user(update.effective_user).language
            with contextlib.suppress(TelegramError):
                await self.application.bot.send_message(
                    update.effective_chat.id, self.app.catalogue.text(lang, "error.generic")
                )

    # ------------------------------------------------------------------ outgoing (core.chat.Transport)
    async def send(self, chat_id: int, reply: Reply) -> int | None:
        bot = self.application.bot
        markup = _markup(reply.buttons)
        text = reply.text
        if reply.photo is not None or reply.document is not None:
            caption = text if len(text) <= MessageLimit.CAPTION_LENGTH else None
            if reply.photo is not None:
                sent = await bot.send_photo(
                    chat_id, reply.photo, caption=caption, reply_markup=markup if caption else None
                )
            else:
                doc = reply.document
                assert doc is not None
                sent = await bot.send_document(
                    chat_id, doc.data, filename=doc.filename, caption=caption, reply_markup=markup if caption else None
                )
            if caption is not None or not text:
                return sent.message_id
            return await self.send(chat_id, Reply(text, reply.buttons))
        pieces = split_text(text)
        if len(pieces) > MAX_SPLIT:
            preview = text[:200].rsplit("\n", 1)[0]
            sent = await bot.send_document(
                chat_id, text.encode("utf-8"), filename="text.txt", caption=preview[:1000], reply_markup=markup
            )
            return sent.message_id
        last: Message | None = None
        for n, piece in enumerate(pieces):
            last = await bot.send_message(chat_id, piece, reply_markup=markup if n == len(pieces) - 1 else None)
        return last.message_id if last else None

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        with contextlib.suppress(BadRequest):  # "message is not modified"
            await self.application.bot.edit_message_text(
                text[: MessageLimit.MAX_TEXT_LENGTH], chat_id, message_id, reply_markup=_markup(buttons)
            )

    async def delete(self, chat_id: int, message_id: int) -> bool:
        try:
            return bool(await self.application.bot.delete_message(chat_id, message_id))
        except TelegramError as err:  # not allowed, already gone, or the network failed: the caller says so
            log.info("could not delete message %s in chat %s: %s", message_id, chat_id, type(err).__name__)
            return False

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        await self.application.bot.send_chat_action(chat_id, ChatAction.TYPING if action == "typing" else action)

    def deep_link(self, payload: str) -> str:
        return create_deep_linked_url(self.application.bot.username, payload)


def run_telegram(app: App, **polling: Any) -> None:
    """Poll Telegram until SIGINT or SIGTERM, then shut down cleanly."""
    transport = TelegramTransport(app)
    transport.application.run_polling(
        allowed_updates=Update.ALL_TYPES, timeout=app.config["telegram"]["poll_timeout"], **polling
    )
