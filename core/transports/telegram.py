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
from typing import Any

from telegram import BotCommand, Message, Update
from telegram import User as TgUser
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters
from telegram.helpers import create_deep_linked_url

from core.app import App
from core.chat import Button, Chat, Photo, Reply, User
from core.delivery import MAX_SPLIT as MAX_SPLIT
from core.delivery import Delivery, SendLimiter
from core.delivery import split_text as split_text
from core.errors import BadImage
from core.i18n import resolve_language
from core.images import IMAGE_SUFFIXES
from core.router import Incoming
from core.state import key

log = logging.getLogger(__name__)


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
            .rate_limiter(SendLimiter.from_config(self.config))  # send rates and retries: core.delivery
            .read_timeout(self.config["request_timeout"])
            .post_init(self._post_init)
            .post_shutdown(self._post_shutdown)
            .build()
        )
        self.application.add_handler(CallbackQueryHandler(self._on_callback))
        # new messages only: an edited caption must not run its command again
        self.application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        self.application.add_error_handler(self._on_error)
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivery = Delivery(self.application.bot, app.services.run_cpu)

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
                BotCommand(c.name, catalogue.text(lang, c.help)[:256]) for c in self.app.commands if not c.admin_only
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

    def _photo_ref(self, message: Message) -> tuple[str, dict[str, Any]] | str | None:
        """``(file_id, meta)`` of the image in ``message``, an error key when it cannot be used, or None."""
        max_bytes = self.config["max_file_mb"] * 1024 * 1024
        if message.photo:
            size = message.photo[-1]
            file_id = size.file_id
            meta = {"width": size.width, "height": size.height, "size": size.file_size, "mime_type": "image/jpeg"}
        elif message.animation or message.video or message.video_note or message.sticker:
            return "error.animation"  # checked before documents: Telegram sets `document` on animations too
        elif message.document:
            doc = message.document
            name, mime = doc.file_name or "", doc.mime_type or ""
            if not (mime.startswith("image/") or name.lower().endswith(IMAGE_SUFFIXES)):
                return "error.not_an_image_file"
            file_id = doc.file_id
            meta = {"size": doc.file_size, "file_name": name, "mime_type": mime, "as_document": True}
        else:
            return None
        if meta.get("size") and meta["size"] > max_bytes:
            return "error.file_too_large"
        return file_id, meta

    def photo_from_ref(self, ref: str, meta: dict[str, Any]) -> Photo:
        """The photo Telegram keeps under ``file_id`` ``ref``, downloaded (into memory) when read."""
        max_bytes = self.config["max_file_mb"] * 1024 * 1024
        bot = self.application.bot

        async def load() -> bytes:
            tg_file = await bot.get_file(ref)
            if tg_file.file_size and tg_file.file_size > max_bytes:
                raise BadImage("file over the download limit", key="error.file_too_large")
            return bytes(await tg_file.download_as_bytearray())

        return Photo(load, ref=ref, **{k: v for k, v in meta.items() if k in Photo.META})

    def _part(self, message: Message) -> dict[str, Any]:
        """One message of an update as plain data (what an album buffer keeps: no bytes, no names)."""
        found = self._photo_ref(message)
        part: dict[str, Any] = {"message_id": message.message_id, "text": message.text or message.caption or ""}
        if isinstance(found, str):
            part["error"] = found
        elif found is not None:
            part["photo"] = {"ref": found[0], "meta": found[1]}
        return part

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_chat is None:
            return
        if not message.media_group_id:
            await self._deliver([self._part(message)], update)
            return
        # the photos of an album arrive as separate updates: collect them (in the state store) for album_wait
        album = key("album", update.effective_chat.id, message.media_group_id)
        wait = self.config["album_wait"]
        if await self.app.services.state.append(album, self._part(message), ttl=wait * 4 + 60) == 1:
            task = asyncio.create_task(self._deliver_album(album, update))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver_album(self, album: str, update: Update) -> None:
        await asyncio.sleep(self.config["album_wait"])
        parts = await self.app.services.state.delete(album) or []
        await self._deliver(sorted(parts, key=lambda p: p["message_id"]), update)

    async def _deliver(self, parts: list[dict[str, Any]], update: Update) -> None:
        assert update.effective_chat is not None and update.effective_message is not None
        chat = Chat(update.effective_chat.id, update.effective_chat.type)
        user = self._user(update.effective_message.from_user)
        text = next((p["text"] for p in parts if p["text"]), "")
        photos = [self.photo_from_ref(p["photo"]["ref"], p["photo"]["meta"]) for p in parts if "photo" in p]
        error = next((p["error"] for p in parts if "error" in p), None)
        incoming = Incoming(user, chat, text, photos, parts[0]["message_id"], error=error if not photos else None)
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
    # sending (retries, rate limits, adapting what Telegram refuses) lives in core.delivery
    async def send(self, chat_id: int, reply: Reply) -> int | None:
        return await self.delivery.send(chat_id, reply)

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        await self.delivery.edit(chat_id, message_id, text, buttons)

    async def delete(self, chat_id: int, message_id: int) -> bool:
        return await self.delivery.delete(chat_id, message_id)

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        await self.delivery.chat_action(chat_id, ChatAction.TYPING if action == "typing" else action)

    def deep_link(self, payload: str) -> str:
        return create_deep_linked_url(self.application.bot.username, payload)


def run_telegram(app: App, **polling: Any) -> None:
    """Poll Telegram until SIGINT or SIGTERM, then shut down cleanly."""
    transport = TelegramTransport(app)
    transport.application.run_polling(
        allowed_updates=Update.ALL_TYPES, timeout=app.config["telegram"]["poll_timeout"], **polling
    )
