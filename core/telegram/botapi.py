"""The Bot API facade: one python-telegram-bot ``ExtBot`` (no ``Application``: the bot runs its own long polling and
webhook, so PTB's dispatcher would have nothing to do), seen by the pipeline as a :class:`core.contract.chat.Transport`.

It sends through :mod:`core.sending` (the sender's retries and adaptation, the pacer as the bot's rate limiter),
downloads files into memory (size checked before the download; the download rides the sender's retries too),
fetches updates for polling, and sets or deletes the webhook. It decides nothing about updates:
:mod:`core.telegram.decode` translates them, the pipeline handles them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from telegram import BotCommand
from telegram.constants import ChatAction
from telegram.error import BadRequest, Conflict, TelegramError
from telegram.ext import ExtBot
from telegram.helpers import create_deep_linked_url
from telegram.request import HTTPXRequest

from core.contract.chat import Button, Photo, Reply, VideoNote
from core.contract.errors import BadImage
from core.sending.pacer import SendLimiter
from core.sending.sender import Sender

if TYPE_CHECKING:
    from core.infra.metrics import Metrics

log = logging.getLogger(__name__)

#: The updates the bot asks Telegram for (edited messages are journaled and ignored).
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "chat_join_request"]
#: Connections for sending (PTB's ``Application`` default); ``getUpdates`` has one of its own.
POOL_SIZE = 256


class TelegramBot:
    """The Bot API for one bot token (``telegram:`` config section), with its sender and pacer."""

    def __init__(
        self,
        telegram: dict[str, Any],
        limiter: SendLimiter,
        run_cpu: Callable[..., Coroutine[Any, Any, Any]],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = telegram
        timeout = telegram["request_timeout"]
        self.bot: ExtBot[Any] = ExtBot(
            telegram["token"],
            base_url=telegram["base_url"],
            base_file_url=telegram["base_file_url"],
            request=HTTPXRequest(connection_pool_size=POOL_SIZE, read_timeout=timeout),
            get_updates_request=HTTPXRequest(read_timeout=timeout),
            rate_limiter=limiter,
        )
        self.delivery = Sender.from_config(self.bot, run_cpu, telegram, metrics=metrics)
        self.max_bytes = telegram["max_file_mb"] * 1024 * 1024
        self._started = False

    @property
    def username(self) -> str:
        return self.bot.username

    async def start(self) -> None:
        """Connect (``getMe``, its network errors, timeouts and 5xx retried like a send's)."""
        await self.delivery.retrying("getMe", lambda _: self.bot.initialize())
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.bot.shutdown()

    # ------------------------------------------------------------------ core.contract.chat.Transport
    async def send(self, chat_id: int, reply: Reply) -> int | None:
        return await self.delivery.send(chat_id, reply)

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        await self.delivery.edit(chat_id, message_id, text, buttons)

    async def delete(self, chat_id: int, message_id: int) -> bool:
        return await self.delivery.delete(chat_id, message_id)

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        await self.delivery.chat_action(chat_id, ChatAction.TYPING if action == "typing" else action)

    async def acknowledge(self, query_id: str) -> None:
        """Answer a button press (the spinner on the button stops); after a restart it may be too old to answer."""
        with contextlib.suppress(TelegramError):
            await self.bot.answer_callback_query(query_id)

    def deep_link(self, payload: str) -> str:
        return create_deep_linked_url(self.bot.username, payload)

    def photo_from_ref(self, ref: str, meta: dict[str, Any]) -> Photo:
        """The photo Telegram keeps under ``file_id`` ``ref``, downloaded (into memory) when read; ``getFile`` and
        the download ride the sender's retries (a download passes no rate limiter: its 429s are waited out there)."""
        bot, max_bytes, retrying = self.bot, self.max_bytes, self.delivery.retrying

        async def load() -> bytes:
            tg_file = await retrying("getFile", lambda _: bot.get_file(ref))
            if tg_file.file_size and tg_file.file_size > max_bytes:
                raise BadImage("file over the download limit", key="error.file_too_large")
            return bytes(await retrying("file download", lambda _: tg_file.download_as_bytearray(), paced=False))

        return Photo(load, ref=ref, **{k: v for k, v in meta.items() if k in Photo.META})

    def video_from_ref(self, meta: dict[str, Any]) -> VideoNote:
        """The video Telegram keeps under ``meta["ref"]`` (a ``file_id``), downloaded into memory when read, through
        the same download path and limit as photos (``telegram.max_file_mb``, checked again before download)."""
        photo = self.photo_from_ref(meta["ref"], {})
        fields = ("kind", "duration", "length", "size", "forwarded", "sent_at")
        return VideoNote(photo.loader, ref=meta["ref"], **{k: meta[k] for k in fields if k in meta})

    async def answer_join_request(self, chat_id: int, user_id: int, approve: bool) -> bool:
        """``approveChatJoinRequest`` / ``declineChatJoinRequest``; True when the request is answered now or was
        already (Telegram: ``HIDE_REQUESTER_MISSING``, ``USER_ALREADY_PARTICIPANT``), False to try again later."""
        try:
            if approve:
                await self.bot.approve_chat_join_request(chat_id, user_id)
            else:
                await self.bot.decline_chat_join_request(chat_id, user_id)
        except BadRequest as err:
            done = any(s in str(err).upper() for s in ("HIDE_REQUESTER_MISSING", "USER_ALREADY_PARTICIPANT"))
            log.info("join request of user %s for chat %s: %s (%s)", user_id, chat_id, err, "done" if done else "kept")
            return done
        except TelegramError as err:
            log.warning("join request of user %s for chat %s not answered yet: %s", user_id, chat_id, err)
            return False
        return True

    async def ping(self) -> None:
        """Ask the Bot API once (``getMe``), without the sending layer's retries: for ``/readyz``."""
        await self.bot.get_me(read_timeout=3, connect_timeout=3, rate_limit_args=1)  # one attempt

    # ------------------------------------------------------------------ menus, polling, webhook
    async def set_commands(self, menus: dict[str, list[tuple[str, str]]]) -> None:
        """``setMyCommands`` per language (``{"en": [(command, description), …], "zh": …}``; ``en`` is the default)."""
        for lang, entries in menus.items():
            commands = [BotCommand(name, text[:256]) for name, text in entries]
            code = None if lang == "en" else lang
            set_commands = functools.partial(self.bot.set_my_commands, commands, language_code=code)
            try:
                await self.delivery.retrying("setMyCommands", lambda _, call=set_commands: call())
            except TelegramError as err:
                log.warning("setMyCommands (%s) failed: %s", lang, err)

    async def get_updates(self, offset: int | None) -> list[dict[str, Any]]:
        """One long poll: the updates as plain JSON (what the journal keeps)."""
        try:
            updates = await self.bot.get_updates(
                offset=offset, timeout=self.config["poll_timeout"], allowed_updates=ALLOWED_UPDATES
            )
        except Conflict as err:  # someone set a webhook meanwhile (or another poller runs): polling wins here
            if "webhook" in str(err).lower():
                await self.delete_webhook()
            raise
        return [json.loads(update.to_json()) for update in updates]

    async def confirm(self, offset: int | None) -> None:
        """Tell Telegram the updates below ``offset`` arrived (a last short ``getUpdates``, as PTB does)."""
        if offset is None:
            return
        try:
            await self.bot.get_updates(offset=offset, timeout=0, limit=1)
        except TelegramError as err:  # they come again at the next start, and the journal drops them
            log.info("could not confirm the last updates at shutdown: %s", err)

    async def set_webhook(self, url: str, secret: str) -> bool:
        """``setWebhook`` (URL, secret, the updates polling asks for, ``max_connections``, pending updates kept);
        whether Telegram took it (a refusal is logged, never with the secret)."""
        try:
            await self.bot.set_webhook(
                url=url,
                secret_token=secret,
                allowed_updates=ALLOWED_UPDATES,
                max_connections=self.config["webhook_max_connections"],
                drop_pending_updates=False,
            )
        except TelegramError as err:
            log.error("setWebhook %s failed: %s; Telegram delivers nothing until it succeeds", url, err)
            return False
        log.info("webhook set: Telegram posts updates to %s", url)
        return True

    async def delete_webhook(self) -> None:
        """``deleteWebhook`` keeping the pending updates (polling gets them)."""
        try:
            await self.delivery.retrying("deleteWebhook", lambda _: self.bot.delete_webhook(drop_pending_updates=False))
        except TelegramError as err:
            log.warning("deleteWebhook failed: %s", err)
