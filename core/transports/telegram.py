"""The Telegram transport: python-telegram-bot v22 ``Application`` wiring, with our own long polling or a webhook.

Updates reach the bot one of two ways (``telegram.mode``), both through :mod:`core.intake`:

- ``polling`` (the default): each ``getUpdates`` batch is journaled in the database before the next
  ``getUpdates`` confirms it to Telegram; any webhook left set is deleted first (``getUpdates`` is a 409 while
  one is set);
- ``webhook``: Telegram POSTs each update to ``<server.public_url><telegram.webhook_path>`` on the bot's web
  server; :mod:`core.webhook` checks it and journals it before answering 200. ``setWebhook`` at start; at stop
  the webhook stays set unless ``telegram.webhook_delete_on_stop`` (another process may still serve it).

Unfinished updates are replayed after a restart, and a replayed update never sends a reply twice. The
updates of one chat are handled in arrival order, those of different chats concurrently, so one slow job
never stalls another user.

Updates become :class:`core.router.Incoming` events: photos (largest size) and images sent as files
(full resolution) are attached lazily (downloaded into memory only when a plugin reads them); the
photos of an album are collected until ``telegram.album_wait`` seconds passed without a new part (at most
``album_max_wait``) and delivered as one event; files over ``telegram.max_file_mb`` are refused before any
download. Replies over 4096 characters are split at line breaks, or sent as a ``.txt`` file when they
would take more than :data:`MAX_SPLIT` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import signal
from typing import Any

from telegram import BotCommand, Message, Update
from telegram import User as TgUser
from telegram.constants import ChatAction
from telegram.error import BadRequest, Conflict, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatJoinRequestHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.helpers import create_deep_linked_url

from core.app import App
from core.chat import Button, Chat, JoinRequest, Photo, Reply, Transport, User, VideoNote
from core.conversation import TEXT
from core.delivery import MAX_SPLIT as MAX_SPLIT
from core.delivery import Delivery, SendLimiter
from core.delivery import split_text as split_text
from core.errors import BadImage
from core.i18n import resolve_language
from core.images import DOCUMENT_MIME_TYPES, DOCUMENT_SUFFIXES, IMAGE_SUFFIXES
from core.intake import Entry, Intake
from core.router import Incoming
from core.webhook import WebhookEndpoint, webhook_secret

log = logging.getLogger(__name__)

#: The updates the bot asks Telegram for (edited messages are journaled and ignored).
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "chat_join_request"]
#: Seconds a shutdown waits for updates being handled; the rest are replayed at the next start.
STOP_WAIT = 20.0
#: A run of digits as long as an ID or card number: a text holding one is never journaled.
_LONG_NUMBER = re.compile(r"\d{15}")
#: Set in the journaled form of an update whose text was left out (see ``TelegramTransport._scrub``).
WITHHELD = "aipbot_withheld"
#: The longest pause between two ``setWebhook`` attempts when Telegram did not take the webhook.
MAX_WEBHOOK_BACKOFF = 300.0


class TelegramTransport:
    """Connects an :class:`App` to Telegram through a PTB ``Application``."""

    def __init__(self, app: App, role: str = "bot") -> None:
        """``role``: ``bot`` (one process does everything), ``serve`` (a cluster front end: the webhook, tasks
        for the workers) or ``worker`` (a cluster worker: handles the chats its tasks name; see core.cluster)."""
        self.app = app
        self.role = role
        app.services.handles_updates = role != "serve"
        self.config = app.config["telegram"]
        limiter = SendLimiter.from_config(self.config)  # send rates and retries: core.delivery
        limiter.metrics = app.metrics
        limiter.shared = app.services.tokens.shared  # cluster mode: the send rates are the whole cluster's
        self.application: Application = (
            ApplicationBuilder()
            .token(self.config["token"])
            .base_url(self.config["base_url"])
            .base_file_url(self.config["base_file_url"])
            .concurrent_updates(True)
            .rate_limiter(limiter)
            .read_timeout(self.config["request_timeout"])
            .post_init(self._post_init)
            .post_shutdown(self._post_shutdown)
            .build()
        )
        self.application.add_handler(CallbackQueryHandler(self._on_callback))
        # new messages only: an edited caption must not run its command again
        self.application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        self.application.add_handler(ChatJoinRequestHandler(self._on_callback))  # through the intake too
        self.application.add_error_handler(self._on_error)
        self.intake: Intake | None = None
        self._poller: asyncio.Task[None] | None = None
        self.delivery = Delivery(self.application.bot, app.services.run_cpu)
        self.mode: str = self.config["mode"] if role != "worker" else "worker"
        self.webhook: WebhookEndpoint | None = None
        self._webhook_set = False
        self._webhook_task: asyncio.Task[None] | None = None
        if self.mode == "webhook":
            self._secret = webhook_secret(self.config)
            self.webhook = WebhookEndpoint(
                self._secret,
                source_networks=self.config["webhook_source_networks"],
                trusted_proxies=self.config["trusted_proxies"],
                max_body=min(self.config["webhook_max_body_kb"] * 1024, app.web.max_body),
                metrics=app.metrics,
            )
            app.web.route(self.config["webhook_path"], self.webhook.handle, methods=["POST"], name="telegram-webhook")
            app.web.ready_check("webhook", self._webhook_ready)

    # ------------------------------------------------------------------ lifecycle
    async def _post_init(self, application: Application) -> None:
        """After getMe: register the command menu (not from workers) and start the plugins."""
        if self.role != "worker":
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
        """Connect (getMe), start the plugins, replay what an earlier run left unfinished, then poll (or set the
        webhook and take updates on it)."""
        await self.application.initialize()
        await self._post_init(self.application)
        await self.application.start()
        self.intake = self._intake()
        await self.intake.start()
        if self.role == "worker":
            return
        if self.webhook is not None:
            self.webhook.receive = self.intake.receive  # from now on the endpoint records (before: 503)
            if not await self._set_webhook():
                self._webhook_task = asyncio.get_running_loop().create_task(
                    self._keep_setting_webhook(), name="aipbot-set-webhook"
                )
            return
        await self._delete_webhook()  # polling while a webhook is set draws 409 Conflict
        self._poller = asyncio.get_running_loop().create_task(self.intake.poll(self._get_updates), name="aipbot-poll")

    def _intake(self) -> Intake:
        """The journal and queues (core.intake); in cluster mode the cluster's (core.cluster)."""
        common: dict[str, Any] = dict(
            album_wait=self.config["album_wait"], album_max_wait=self.config["album_max_wait"], scrub=self._scrub
        )
        if self.role == "bot":
            return Intake(self.app.services, self, self._classify, self._handle, **common)
        from core.cluster import ClusterIntake, task_sender

        cluster = self.app.config["cluster"]
        return ClusterIntake(
            self.app.services,
            self,
            self._classify,
            self._handle,
            **common,
            send_task=task_sender(self.app.config),
            front=self.role == "serve",
            withheld=WITHHELD,
            lock_seconds=cluster["chat_lock_seconds"],
            sweep_seconds=cluster["sweep_seconds"],
        )

    async def stop(self) -> None:
        """Stop polling (or taking webhook updates: 503 from now on, so Telegram delivers them again, here or to
        another process), let the updates being handled finish (at most :data:`STOP_WAIT` seconds: the rest
        are replayed at the next start), then stop the outbox, the plugins and PTB."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self.webhook is not None:
            self.webhook.receive = None
            if self._webhook_task is not None:
                self._webhook_task.cancel()
                await asyncio.gather(self._webhook_task, return_exceptions=True)
                self._webhook_task = None
            if self.config["webhook_delete_on_stop"] and self._webhook_set:
                await self._delete_webhook()
            self._webhook_set = False
        if self.intake is not None:
            await self.intake.stop(STOP_WAIT)
            if self.webhook is None:
                await self._confirm(self.intake.confirmable())
        await self.app.services.outbox.stop()
        if self.application.running:
            await self.application.stop()
        await self._post_shutdown(self.application)
        await self.application.shutdown()

    async def _confirm(self, offset: int | None) -> None:
        """Tell Telegram the updates below ``offset`` arrived (a last short ``getUpdates``, as PTB does)."""
        if offset is None:
            return
        try:
            await self.application.bot.get_updates(offset=offset, timeout=0, limit=1)
        except TelegramError as err:  # they come again at the next start, and the journal drops them
            log.info("could not confirm the last updates at shutdown: %s", err)

    async def _get_updates(self, offset: int | None) -> list[dict[str, Any]]:
        """One long poll: the updates as plain JSON (what the journal keeps)."""
        timeout = self.config["poll_timeout"]
        try:
            updates = await self.application.bot.get_updates(
                offset=offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES
            )
        except Conflict as err:  # someone set a webhook meanwhile (or another poller runs): polling wins here
            if "webhook" in str(err).lower():
                await self._delete_webhook()
            raise
        return [json.loads(update.to_json()) for update in updates]

    # ------------------------------------------------------------------ webhook
    def webhook_url(self) -> str:
        """Where Telegram posts updates: ``server.public_url`` + ``telegram.webhook_path``."""
        return self.app.web.url(self.config["webhook_path"])

    async def _set_webhook(self) -> bool:
        """``setWebhook`` (URL, secret, the updates polling asks for, ``max_connections``, pending updates kept);
        whether Telegram took it (a refusal is logged, never with the secret)."""
        url = self.webhook_url()
        try:
            await self.application.bot.set_webhook(
                url=url,
                secret_token=self._secret,
                allowed_updates=ALLOWED_UPDATES,
                max_connections=self.config["webhook_max_connections"],
                drop_pending_updates=False,
            )
        except TelegramError as err:
            log.error("setWebhook %s failed: %s; Telegram delivers nothing until it succeeds", url, err)
            return False
        self._webhook_set = True
        log.info("webhook set: Telegram posts updates to %s", url)
        return True

    async def _keep_setting_webhook(self) -> None:
        """Try ``setWebhook`` again with a growing pause (at most :data:`MAX_WEBHOOK_BACKOFF`) until it succeeds;
        ``/readyz`` names the webhook not ready meanwhile."""
        backoff = 2.0
        while True:
            await asyncio.sleep(backoff)
            if await self._set_webhook():
                return
            backoff = min(MAX_WEBHOOK_BACKOFF, backoff * 2)

    async def _delete_webhook(self) -> None:
        """``deleteWebhook`` keeping the pending updates (polling gets them)."""
        try:
            await self.application.bot.delete_webhook(drop_pending_updates=False)
        except TelegramError as err:
            log.warning("deleteWebhook failed: %s", err)

    async def _webhook_ready(self) -> None:
        """For ``/readyz``: the webhook endpoint records updates and Telegram took ``setWebhook``."""
        if self.webhook is None or self.webhook.receive is None:
            raise RuntimeError("the webhook does not take updates (starting or stopping)")
        if not self._webhook_set:
            raise RuntimeError("setWebhook has not succeeded")

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
            readable = mime.startswith("image/") or mime in DOCUMENT_MIME_TYPES
            if not (readable or name.lower().endswith(IMAGE_SUFFIXES + DOCUMENT_SUFFIXES)):
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

    def video_from_ref(self, meta: dict[str, Any]) -> VideoNote:
        """The video Telegram keeps under ``meta["ref"]`` (a ``file_id``), downloaded into memory when read, through
        the same download path and limit as photos (``telegram.max_file_mb``, checked again before download)."""
        photo = self.photo_from_ref(meta["ref"], {})
        fields = ("kind", "duration", "length", "size", "forwarded", "sent_at")
        return VideoNote(photo.loader, ref=meta["ref"], **{k: meta[k] for k in fields if k in meta})

    def _part(self, message: Message) -> dict[str, Any]:
        """One message of an update as plain data (what an album buffer keeps: no bytes, no names)."""
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

    @staticmethod
    def _classify(update: dict[str, Any]) -> tuple[str | None, str | None]:
        """``(chat, album)`` of an update: messages and button presses are queued per chat (albums by
        ``media_group_id``); edits and anything else are not ordered (they run no command)."""
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

    async def _scrub(self, update: dict[str, Any]) -> dict[str, Any]:
        """What the journal keeps of ``update``: no names (first names blanked, last names and usernames
        dropped), no quoted message, only the ids of an edited message or of the message under a pressed
        button, and no text that answers a plugin's question (``ctx.expect_text``: a name and an ID number
        for WeBank) or holds a long number — such a text is replaced by :data:`WITHHELD`; after a restart
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
                    waiting = await self.app.services.conversations.get(chat_id, user_id)
                    personal = waiting is not None and waiting.wants == TEXT
            if personal:
                for name in ("text", "caption", "entities", "caption_entities"):
                    message.pop(name, None)
                form[WITHHELD] = True
        return form

    async def _handle(self, entries: list[Entry], transport: Transport) -> None:
        """Handle one journaled update (or the updates of one album); replies go through ``transport``."""
        bot = self.application.bot
        updates = [Update.de_json(entry.body, bot) for entry in entries]
        update = updates[0]
        for entry in entries:
            self.app.metrics.update_received(next((k for k in entry.body if k != "update_id"), "unknown"))
        try:
            if any(entry.body.get(WITHHELD) for entry in entries) and update.effective_chat is not None:
                # replayed without its text (not journaled): the user sends it again
                text = self.app.catalogue.text(self._user(update.effective_user).language, "intake.send_again")
                await transport.send(update.effective_chat.id, Reply(text))
            elif update.callback_query is not None:
                await self._callback(update, transport)
            elif update.chat_join_request is not None:
                await self._join_request(update, transport)
            elif update.message is not None and update.effective_chat is not None:
                await self._deliver([self._part(u.message) for u in updates if u.message], update, transport)
            # an edited message (or anything else) runs nothing: an edited caption must not run its command again
        except Exception:
            log.error("error while handling update %s", update.update_id, exc_info=True)
            if update.effective_chat is not None:
                text = self.app.catalogue.text(self._user(update.effective_user).language, "error.generic")
                with contextlib.suppress(Exception):
                    await transport.send(update.effective_chat.id, Reply(text))

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An update PTB itself dispatched (``application.process_update``): through the intake too."""
        await self._receive(update)

    async def _receive(self, update: Update) -> None:
        if self.intake is None:
            raise RuntimeError("the transport is not started")
        await self.intake.receive([json.loads(update.to_json())])

    async def _deliver(self, parts: list[dict[str, Any]], update: Update, transport: Transport) -> None:
        assert update.effective_chat is not None and update.effective_message is not None
        chat = Chat(update.effective_chat.id, update.effective_chat.type)
        user = self._user(update.effective_message.from_user)
        parts = sorted(parts, key=lambda p: p["message_id"])
        text = next((p["text"] for p in parts if p["text"]), "")
        photos = [self.photo_from_ref(p["photo"]["ref"], p["photo"]["meta"]) for p in parts if "photo" in p]
        error = next((p["error"] for p in parts if "error" in p), None)
        video = next((self.video_from_ref(p["video"]) for p in parts if "video" in p), None)
        incoming = Incoming(
            user,
            chat,
            text,
            photos,
            parts[0]["message_id"],
            error=error if not photos else None,
            key=str(update.update_id),
            video=video,
        )
        if error and photos:
            await transport.send(chat.id, Reply(self.app.catalogue.text(user.language, error)))
        await self.app.router.handle(incoming, transport)

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button press PTB itself dispatched: through the intake too."""
        await self._receive(update)

    async def _callback(self, update: Update, transport: Transport) -> None:
        query = update.callback_query
        if query is None:
            return
        with contextlib.suppress(TelegramError):  # after a restart the query may be too old to answer
            await query.answer()
        chat = update.effective_chat
        if chat is None:
            return
        message_id = query.message.message_id if query.message else None
        incoming = Incoming(
            self._user(query.from_user),
            Chat(chat.id, chat.type),
            "",
            [],
            message_id,
            query.data or "",
            key=str(update.update_id),
        )
        await self.app.router.handle(incoming, transport)

    async def _join_request(self, update: Update, transport: Transport) -> None:
        request = update.chat_join_request
        assert request is not None
        join = JoinRequest(request.chat.id, request.user_chat_id, request.chat.title or "", request.date.timestamp())
        chat = Chat(request.user_chat_id, "private")
        incoming = Incoming(self._user(request.from_user), chat, key=str(update.update_id), join_request=join)
        await self.app.router.handle(incoming, transport)

    async def answer_join_request(self, chat_id: int, user_id: int, approve: bool) -> bool:
        """``approveChatJoinRequest`` / ``declineChatJoinRequest``; True when the request is answered now or was
        already (Telegram: ``HIDE_REQUESTER_MISSING``, ``USER_ALREADY_PARTICIPANT``), False to try again later."""
        bot = self.application.bot
        try:
            if approve:
                await bot.approve_chat_join_request(chat_id, user_id)
            else:
                await bot.decline_chat_join_request(chat_id, user_id)
        except BadRequest as err:
            done = any(s in str(err).upper() for s in ("HIDE_REQUESTER_MISSING", "USER_ALREADY_PARTICIPANT"))
            log.info("join request of user %s for chat %s: %s (%s)", user_id, chat_id, err, "done" if done else "kept")
            return done
        except TelegramError as err:
            log.warning("join request of user %s for chat %s not answered yet: %s", user_id, chat_id, err)
            return False
        return True

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

    async def ping(self) -> None:
        """Ask the Bot API once (``getMe``), without the sending layer's retries: for ``/readyz``."""
        await self.application.bot.get_me(read_timeout=3, connect_timeout=3, rate_limit_args=1)  # one attempt

    def deep_link(self, payload: str) -> str:
        return create_deep_linked_url(self.application.bot.username, payload)


def run_telegram(app: App, role: str = "bot") -> None:
    """Poll Telegram (or serve the webhook) until SIGINT or SIGTERM, then shut down cleanly (updates being
    handled may finish). ``role="serve"``: a cluster front end (see :class:`TelegramTransport`)."""
    asyncio.run(_serve(TelegramTransport(app, role)))


async def _serve(transport: TelegramTransport) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await transport.start()
        await stopping.wait()
    finally:
        await transport.stop()
        await transport.app.web.closed()  # the web server finishes its requests on this loop


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
