"""A fake Telegram Bot API server for end-to-end tests (real HTTP on ``127.0.0.1``, no network).

:class:`FakeTelegram` (a :class:`tests.fakes.server.LocalServer`) answers the Bot API methods aipbot uses the way
``api.telegram.org`` does (the rules it applies are in :mod:`tests.fakes.botapi`), so the real python-telegram-bot
stack can be pointed at it with ``base_url`` / ``base_file_url``::

    async def test_echo(fake_telegram):
        app = fake_telegram.app_builder().build()
        app.add_handler(MessageHandler(filters.TEXT, echo))
        async with fake_telegram.polling(app):
            fake_telegram.user_sends_text("hello")
            assert (await fake_telegram.bot_replied()).text == "hello"

The users' side (each queues an update, returns the Message / CallbackQuery dict; *who* is :class:`Who`)
    ``user_sends_text(text, *, reply_to=None, **who)``, ``user_sends_photo(data, *, caption=None,
    media_group_id=None, **who)``, ``user_sends_album(images, *, caption=None, **who)``,
    ``user_sends_document(data, *, file_name, mime_type, caption=None, file_size=None, **who)``,
    ``user_presses_button(message_or_call, callback_data, *, strict=True, **who)``; ``pending_updates``.
The bot's side, for assertions
    ``calls`` (every :class:`Call`: method, params, files, result or error, HTTP status, time, injected fault),
    ``downloads`` (each file download, as a ``Call`` of method ``"download"``),
    ``calls_of(method)``, ``await bot_replied(chat_id=None, *, methods=..., timeout=10)``,
    ``await wait_for(method, *, timeout=10, **params)``; ``messages``, ``deleted``, ``commands``,
    ``scoped_commands``, ``webhook_deleted``. ``bot_replied`` / ``wait_for`` skip calls that got an injected fault.
Knobs
    ``can_delete``, ``long_poll_cap``; ``fail(method, times, kind, ...)`` scripts the next calls of a method (or of the
    file downloads: ``"download"``) to answer ``429`` / ``5xx`` / ``400`` or to drop or stall the connection, with no
    side effect; ``limit_rate(...)`` answers
    ``429`` like Telegram's flood control (1 message/s per chat with a short burst, 30/s overall; off by default).
Webhooks
    ``setWebhook`` / ``deleteWebhook`` / ``getWebhookInfo`` as Telegram answers them (``getUpdates`` is a ``409
    Conflict`` while a webhook is set); queued updates are then POSTed as JSON to the webhook URL (only
    ``http://127.0.0.1`` / ``localhost`` are accepted) with ``X-Telegram-Bot-Api-Secret-Token``, in order, and
    redelivered after a non-2xx answer or a connection error (``webhook_retries`` times, ``webhook_backoff`` seconds
    apart, doubling). Every attempt is a :class:`Delivery` in ``deliveries``; ``await webhook_done(count)`` waits for
    updates to be delivered (or given up); ``balance_webhook(*urls)`` sends successive attempts to several URLs in
    turn, as a load balancer in front of several bot front ends would.
PTB conveniences
    ``bot()``, ``app_builder()``, ``async with polling(app)``; ``TOKEN``, ``base_url``, ``base_file_url``;
    ``config(**telegram)``: the ``telegram:`` section of a bot on this server.

What it checks like Telegram does (each a ``400 Bad Request``, PTB's ``BadRequest``): empty or too long texts and
captions, HTML / MarkdownV2 that Telegram could not parse, callback data over 64 bytes, invalid bot commands,
replies to unknown messages, edits that change nothing, deleting a message that is gone or when ``can_delete`` is
false, ``getFile`` of unknown or over-20-MB files, unknown or twice-answered callback queries. A wrong token answers
``401 Unauthorized`` (PTB: ``InvalidToken``), an unknown method ``404``.

How PTB talks: every call is a POST whose parameters are form fields (``multipart/form-data`` as soon as a file is
attached); strings are sent as they are, every other value (ints, bools, ``reply_markup``, ``commands``...) as JSON.
:func:`decode_params` decodes JSON, urlencoded and multipart bodies and query strings alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import itertools
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar
from urllib.parse import unquote, urlsplit

import pytest

from tests.fakes.botapi import (
    MAX_GETFILE_SIZE,
    ApiError,
    Call,
    JSONDict,
    bad_request,
    check_caption,
    check_commands,
    check_text,
    command_entities,
    decode_params,
    inline_keyboard,
    json_response,
    photo_variants,
    scope_key,
    too_many_requests,
)
from tests.fakes.server import Hangup, LocalServer, Upload

if TYPE_CHECKING:  # Python 3.11+; never imported at run time (annotations are strings)
    from typing import Unpack

__all__ = ["Call", "Delivery", "FakeTelegram", "Who", "decode_params", "fake_telegram"]

T = TypeVar("T")

#: Methods that send a message, and so count against :meth:`FakeTelegram.limit_rate`.
SENDING_METHODS = frozenset({"sendmessage", "sendphoto", "senddocument"})
FAULT_KINDS = ("429", "5xx", "400", "drop", "stall")
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
)
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class Who(TypedDict, total=False):
    """Who acts on the users' side: ``user_id`` (1001), ``chat_id`` (the user's id in a private chat, else
    :attr:`FakeTelegram.DEFAULT_GROUP_ID`), ``chat_type`` (``"private"``, or ``"group"`` / ``"supergroup"``),
    ``language_code`` (``"en"``), ``first_name`` (``"Ada"``), ``username`` (none)."""

    user_id: int
    chat_id: int | None
    chat_type: str
    language_code: str | None
    first_name: str
    username: str | None


@dataclass
class Delivery:
    """One attempt to POST an update to the webhook.

    Attributes:
        update: The Update dict sent.
        url: Where it was sent.
        attempt: 1 for the first delivery of this update, 2 for the first redelivery...
        at: When it was sent (``time.monotonic()``).
        status: The HTTP status the receiver answered; ``None`` when it could not be reached.
        error: What Telegram's ``last_error_message`` would say when it failed, else ``None``.
    """

    update: JSONDict
    url: str
    attempt: int
    at: float
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the receiver answered a 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Fault:
    kind: str
    times: int
    retry_after: int
    description: str
    status: int
    html: bool
    delay: float


class _Bucket:
    """A token bucket: *rate* a second, *burst* at most."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.level, self.at = rate, burst, burst, time.monotonic()

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: now); refills first."""
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        return max(0.0, (1 - self.level) / self.rate)


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_size: int


def _check_local_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise bad_request("bad webhook: the fake Bot API only delivers to http://127.0.0.1 or http://localhost")
    return url


def _post_json(url: str, update: JSONDict, secret: str | None, timeout: float) -> tuple[int | None, str | None]:
    """POST *update* to *url* as Telegram does: ``(status, None)`` for a 2xx, else ``(status or None, error)``."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json"} | ({"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {})
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, json.dumps(update), headers)
        response = connection.getresponse()
        response.read()
    except ConnectionRefusedError:
        return None, "Connection refused"
    except TimeoutError:
        return None, "Read timeout expired"
    except OSError as exc:
        return None, f"Connection error: {exc}"
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return response.status, None
    return response.status, f"Wrong response from the webhook: {response.status} {response.reason}"


# -- the server -------------------------------------------------------------------------------------------------------


class FakeTelegram(LocalServer):
    """A fake Telegram Bot API server on ``127.0.0.1``; see the module docstring.

    Attributes:
        TOKEN: The only token the server accepts.
        bot_username: The bot's username, as ``getMe`` answers it.
        bot_id: The bot's user id (the part of :attr:`TOKEN` before the colon).
        calls: Every Bot API call, in order (including ``getUpdates`` and failed calls).
        commands: What ``setMyCommands`` stored for the default scope, by ``language_code`` (``""`` for none).
        scoped_commands: Every ``setMyCommands``, by ``(scope key, language_code)``; scope keys are ``"default"``,
            ``"all_private_chats"``..., ``"chat:<chat_id>"``, ``"chat_member:<chat_id>:<user_id>"``.
        messages: Every message (the users' and the bot's) by chat id, in order, as currently stored (edits applied,
            deleted ones removed).
        deleted: ``(chat_id, message_id)`` of every message the bot deleted.
        can_delete: When false, ``deleteMessage`` answers ``Bad Request: message can't be deleted``.
        long_poll_cap: The longest a ``getUpdates`` waits for an update, whatever ``timeout`` the bot asked.
        webhook_deleted: How many times the bot called ``deleteWebhook``.
        webhook: The parameters of the webhook set (``url``, ``secret_token``, ``allowed_updates``,
            ``max_connections``), ``None`` when there is none.
        deliveries: Every webhook delivery attempt (:class:`Delivery`), in order.
        webhook_retries: How many times an update is redelivered after its first failed delivery before it is
            given up (Telegram keeps trying for hours; tests want an end).
        webhook_backoff: Seconds before the first redelivery; doubled for each further one.
        webhook_timeout: Seconds a delivery waits for the receiver's answer.
    """

    name = "fake-telegram"
    TOKEN: str = "123456789:AAE" + "x7Jq2LmN4pR8sT1vW3yZ5aB6cD9eF0gH"
    bot_username: str = "aipbot_test_bot"
    bot_first_name: str = "aipbot"
    DEFAULT_GROUP_ID: int = -1001234567890

    def __init__(self, *, long_poll_cap: float = 1.0) -> None:
        """Create the server (not listening yet: call :meth:`start` or use ``with FakeTelegram() as tg:``)."""
        self.bot_id: int = int(self.TOKEN.split(":")[0])
        self.long_poll_cap = long_poll_cap
        self.can_delete: bool = True
        self.calls: list[Call] = []
        self.downloads: list[Call] = []  # file downloads (``/file/bot<token>/<path>``): method "download"
        self.commands: dict[str, list[JSONDict]] = {}
        self.scoped_commands: dict[tuple[str, str], list[JSONDict]] = {}
        self.messages: dict[int, list[JSONDict]] = {}
        self.deleted: list[tuple[int, int]] = []
        #: ``(chat_id, user_id)`` of join requests not yet answered; ``join_answers``: each answer as
        #: ``(chat_id, user_id, "approved" | "declined")`` in order (a request is answered once: then it is gone)
        self.join_requests: set[tuple[int, int]] = set()
        self.join_answers: list[tuple[int, int, str]] = []
        self.webhook_deleted: int = 0
        self.webhook: JSONDict | None = None
        self.deliveries: list[Delivery] = []
        self.webhook_retries: int = 3
        self.webhook_backoff: float = 0.05
        self.webhook_timeout: float = 5.0
        self._cond = threading.Condition()  # guards everything above and below; an RLock underneath
        self._stopped = threading.Event()
        self._updates: list[JSONDict] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_numbers = itertools.count(1)
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._media_groups = itertools.count(13_000_000_000_000_001)
        self._consumed: set[int] = set()
        self._chats: dict[int, JSONDict] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._chat_rate: tuple[float, int] | None = None
        self._chat_buckets: dict[Any, _Bucket] = {}
        self._overall_bucket: _Bucket | None = None
        self._targets: list[str] = []
        self._target_turn = itertools.count()
        self._webhook_done = 0
        self._webhook_error: tuple[int, str] | None = None
        self._deliverer: threading.Thread | None = None

    # -- life cycle and PTB conveniences -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/bot``: pass as PTB's ``base_url`` (it appends the token)."""
        return f"{self.endpoint}/bot"

    @property
    def base_file_url(self) -> str:
        """``http://127.0.0.1:<port>/file/bot``: pass as PTB's ``base_file_url``."""
        return f"{self.endpoint}/file/bot"

    def config(self, **telegram: Any) -> JSONDict:
        """The ``telegram:`` config section of a bot on this server (token, URLs, a 1 s long poll), with
        ``telegram`` overriding keys: ``{"telegram": {...}}``, to merge into a whole config."""
        section = {
            "token": self.TOKEN,
            "base_url": self.base_url,
            "base_file_url": self.base_file_url,
            "poll_timeout": 1,
        }
        return {"telegram": {**section, **telegram}}

    @property
    def bot_user(self) -> JSONDict:
        """The bot as a ``User`` dict (what ``getMe`` answers)."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def start(self) -> FakeTelegram:
        """Listen on ``127.0.0.1`` (a free port), and start the webhook deliverer; returns ``self``."""
        if self._deliverer is None:
            self._stopped.clear()
            super().start()
            self._deliverer = threading.Thread(target=self._deliver_updates, name="fake-telegram-webhook", daemon=True)
            self._deliverer.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes pending long polls and stalls, stops webhook deliveries, closes the socket."""
        with self._cond:
            self._stopped.set()
            self._cond.notify_all()
        if self._deliverer is not None:
            self._deliverer.join(5)
            self._deliverer = None
        super().stop()

    def bot(self, token: str | None = None) -> Any:
        """A ``telegram.Bot`` pointed at this server (use ``async with`` or ``await bot.initialize()``)."""
        from telegram import Bot

        return Bot(token or self.TOKEN, base_url=self.base_url, base_file_url=self.base_file_url)

    def app_builder(self) -> Any:
        """A ``telegram.ext.ApplicationBuilder`` with the token, ``base_url`` and ``base_file_url`` set."""
        from telegram.ext import ApplicationBuilder

        return ApplicationBuilder().token(self.TOKEN).base_url(self.base_url).base_file_url(self.base_file_url)

    @contextlib.asynccontextmanager
    async def polling(self, app: Any, *, timeout: int = 1) -> AsyncIterator[Any]:
        """Run *app* (a PTB ``Application``) polling this server for the ``async with`` block, then shut it down."""
        await app.initialize()
        try:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=timeout)
            yield app
        finally:
            if app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()

    # -- the users' side ---------------------------------------------------------------------------------------------

    def user_sends_text(self, text: str, *, reply_to: JSONDict | None = None, **who: Unpack[Who]) -> JSONDict:
        """Queue a text message from a user (*who*: :class:`Who`); a leading ``/command`` gets its ``bot_command``
        entity. *reply_to* is a message dict the user replies to. Returns the Message dict."""
        content: JSONDict = {"text": text, **command_entities("entities", text)}
        if reply_to is not None:
            content["reply_to_message"] = reply_to
        return self._user_message(content, who)

    def user_sends_photo(
        self, data: bytes, *, caption: str | None = None, media_group_id: str | None = None, **who: Unpack[Who]
    ) -> JSONDict:
        """Queue a photo message; ``photo`` lists PhotoSizes smallest first, the last one being *data* itself
        (width/height read by Pillow; real 90 and 320 px JPEG thumbnails before it). Returns the Message dict."""
        content = {"photo": self._photo_sizes(data), **_caption(caption)}
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        return self._user_message(content, who)

    def user_sends_album(
        self, images: list[bytes], *, caption: str | None = None, **who: Unpack[Who]
    ) -> list[JSONDict]:
        """Queue an album: one photo message per image, all with one ``media_group_id``, the caption on the first."""
        group = str(next(self._media_groups))
        return [
            self.user_sends_photo(data, caption=None if i else caption, media_group_id=group, **who)
            for i, data in enumerate(images)
        ]

    def user_sends_document(
        self,
        data: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        file_size: int | None = None,
        **who: Unpack[Who],
    ) -> JSONDict:
        """Queue a document message. *file_size* overrides the reported size (e.g. claim 25 MB without sending it);
        ``getFile`` then refuses files over 20 MB like Telegram. Returns the Message dict."""
        document = {**self._new_file(data, "documents", _extension(file_name), file_size), "file_name": file_name}
        return self._user_message({"document": document | {"mime_type": mime_type}, **_caption(caption)}, who)

    def user_sends_video_note(
        self,
        data: bytes,
        *,
        duration: int = 3,
        length: int = 384,
        forwarded: bool = False,
        date: int | None = None,
        file_size: int | None = None,
        **who: Unpack[Who],
    ) -> JSONDict:
        """Queue a round video note (``video_note``: ``file_id``, ``length``, ``duration``, ``file_size``), as Telegram
        sends one recorded with the camera button; *forwarded* adds a ``forward_origin``, *date* overrides the send
        time, *file_size* the reported size. Returns the Message dict."""
        note = {
            **self._new_file(data, "video_notes", "mp4", file_size, kind="DQ"),
            "length": length,
            "duration": duration,
        }
        return self._user_message(self._media(note, "video_note", forwarded, date), who)

    def user_sends_video(
        self, data: bytes, *, duration: int = 3, width: int = 640, height: int = 360, **who: Unpack[Who]
    ) -> JSONDict:
        """Queue an ordinary video message (``video``). Returns the Message dict."""
        video = {**self._new_file(data, "videos", "mp4", kind="BA"), "width": width, "height": height}
        video |= {"duration": duration, "mime_type": "video/mp4"}
        return self._user_message({"video": video}, who)

    def _media(self, item: JSONDict, field: str, forwarded: bool, date: int | None) -> JSONDict:
        content: JSONDict = {field: item}
        if forwarded:
            origin = {"id": 777, "is_bot": False, "first_name": "Eve"}
            content["forward_origin"] = {"type": "user", "date": int(time.time()) - 3600, "sender_user": origin}
        if date is not None:
            content["date"] = date
        return content

    def user_requests_to_join(
        self, chat_id: int, *, title: str = "Verified members", bio: str | None = None, **who: Unpack[Who]
    ) -> JSONDict:
        """Queue a ``chat_join_request`` update: the user (with *bio*, if any) asked to join the supergroup *chat_id*
        through an invite link that needs an admin's approval. Returns the ChatJoinRequest dict."""
        user = _user(who)
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        request = {
            "chat": chat,
            "from": user,
            "user_chat_id": user["id"],
            "date": int(time.time()),
            **({"bio": bio} if bio is not None else {}),
            "invite_link": {
                "invite_link": "https://t.me/+AbCdEfGhIjKlMnOp",
                "creator": self.bot_user,
                "creates_join_request": True,
                "is_primary": False,
                "is_revoked": False,
            },
        }
        with self._cond:
            self._chats.setdefault(chat_id, chat)
            self.join_requests.add((chat_id, user["id"]))
            self._queue({"chat_join_request": request})
        return request

    def _answer_join(self, params: JSONDict, answer: str) -> bool:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        with self._cond:
            if (chat_id, user_id) not in self.join_requests:
                raise bad_request("HIDE_REQUESTER_MISSING")
            self.join_requests.discard((chat_id, user_id))
            self.join_answers.append((chat_id, user_id, answer))
        return True

    def _api_approvechatjoinrequest(self, params: JSONDict, files: dict) -> bool:
        return self._answer_join(params, "approved")

    def _api_declinechatjoinrequest(self, params: JSONDict, files: dict) -> bool:
        return self._answer_join(params, "declined")

    def user_presses_button(
        self, message: JSONDict | Call, callback_data: str, *, strict: bool = True, **who: Unpack[Who]
    ) -> JSONDict:
        """Queue a ``callback_query`` update: the user pressed the button with *callback_data* on a bot *message*
        (a Message dict, or the :class:`Call` that sent it). With *strict*, the message's current inline keyboard
        (edits applied) must have such a button. Returns the CallbackQuery dict (its ``id`` is what
        ``answerCallbackQuery`` must answer)."""
        if isinstance(message, Call):
            if not isinstance(message.result, dict):
                raise AssertionError(f"{message} did not send a message")
            message = message.result
        with self._cond:
            current = self._find_message(message["chat"]["id"], message["message_id"]) or message
            rows = (current.get("reply_markup") or {}).get("inline_keyboard", [])
            data = [b.get("callback_data") for row in rows for b in row]
            if strict and callback_data not in data:
                raise AssertionError(f"message {current['message_id']} has no button {callback_data!r}: {data}")
            query_id = str(4_000_000_000_000_000 + next(self._callback_ids))
            self._open_callbacks.add(query_id)
            query = {
                "id": query_id,
                "from": _user(who),
                "message": current,
                "chat_instance": str(-7_000_000_000_000_000 - abs(current["chat"]["id"])),
                "data": callback_data,
            }
            self._queue({"callback_query": query})
        return query

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates queued and not yet confirmed by a ``getUpdates`` offset (or delivered to the webhook)."""
        with self._cond:
            return list(self._updates)

    def _user_message(self, content: JSONDict, who: Who) -> JSONDict:
        unknown = set(who) - set(Who.__annotations__)
        if unknown:
            raise TypeError(f"unknown user parameters: {sorted(unknown)}")
        user = _user(who)
        if who.get("chat_type", "private") == "private":
            chat: JSONDict = {
                "id": who.get("chat_id") or user["id"],
                "type": "private",
                "first_name": user["first_name"],
            }
            chat |= {"username": user["username"]} if "username" in user else {}
        else:
            chat = {
                "id": who.get("chat_id") or self.DEFAULT_GROUP_ID,
                "type": who["chat_type"],
                "title": "aipbot test group",
            }
        with self._cond:
            self._chats[chat["id"]] = chat
            message = self._store_message(chat, user, content)
            self._queue({"message": message})
        return message

    def _queue(self, update: JSONDict) -> None:
        with self._cond:  # a snapshot: later edits of stored messages must not change an update already queued
            self._updates.append(copy.deepcopy({"update_id": next(self._update_ids), **update}))
            self._cond.notify_all()

    def _store_message(self, chat: JSONDict, sender: JSONDict, content: JSONDict) -> JSONDict:
        ids = self._message_ids.setdefault(chat["id"], itertools.count(1))
        message = {"message_id": next(ids), "from": sender, "chat": chat, "date": int(time.time()), **content}
        self.messages.setdefault(chat["id"], []).append(message)
        return message

    def _find_message(self, chat_id: int, message_id: int) -> JSONDict | None:
        return next((m for m in self.messages.get(chat_id, []) if m["message_id"] == message_id), None)

    def _new_file(self, data: bytes, folder: str, ext: str, file_size: int | None = None, kind: str = "BQ") -> JSONDict:
        with self._cond:
            n = next(self._file_numbers)
            stored = _StoredFile(
                file_id=f"{kind}ACAgIAAxkBAAI{n:06d}Zm9vYmFy{n:04d}",
                file_unique_id=f"AQAD{n:06d}",
                file_path=f"{folder}/file_{n}.{ext}",
                data=data,
                file_size=len(data) if file_size is None else file_size,
            )
            self._files[stored.file_id] = self._files_by_path[stored.file_path] = stored
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.file_size}

    def _photo_sizes(self, data: bytes) -> list[JSONDict]:
        return [
            {**self._new_file(thumb, "photos", "jpg", kind="Ag"), "width": width, "height": height}
            for thumb, width, height in photo_variants(data)
        ]

    # -- scripted faults and flood control ---------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        times: int = 1,
        kind: str = "429",
        *,
        retry_after: int = 1,
        description: str = "Bad Request: chat not found",
        status: int = 502,
        html: bool = True,
        delay: float = 10.0,
    ) -> None:
        """Make the next *times* calls of *method* (case-insensitive) fail, with no side effect, the way the real Bot
        API (or the nginx in front of it) does; *method* ``"download"`` means the file downloads
        (``/file/bot<token>/<path>``, recorded in :attr:`downloads`). Scripts for one method queue up in order. *kind*:

        - ``"429"``: ``Too Many Requests: retry after <retry_after>`` with ``parameters.retry_after`` (PTB: RetryAfter);
        - ``"5xx"``: HTTP *status* (502): nginx's HTML page if *html*, else Telegram's JSON error (PTB: NetworkError);
        - ``"400"``: ``Bad Request: <description>`` (PTB: BadRequest);
        - ``"drop"``: the request is read and the connection closed without an answer (PTB: NetworkError);
        - ``"stall"``: no answer for *delay* seconds, then the connection is closed (PTB: TimedOut, with a shorter
          read timeout).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
        if times < 1 or not 500 <= status <= 599:
            raise ValueError("times must be at least 1 and status a 5xx")
        fault = _Fault(kind, times, retry_after, bad_request(description).description, status, html, delay)
        with self._cond:
            self._faults.setdefault(method.lower(), []).append(fault)

    def limit_rate(
        self,
        per_chat: float | None = 1.0,
        overall: float | None = 30.0,
        *,
        chat_burst: int = 3,
        overall_burst: int = 30,
    ) -> None:
        """Answer ``429 Too Many Requests: retry after N`` (N whole seconds, at least 1) like Telegram's flood control
        when the bot sends (sendMessage, sendPhoto, sendDocument) more than *per_chat* messages a second to one chat
        (*chat_burst* in a row allowed) or more than *overall* a second in all (*overall_burst* in a row). Refused
        sends have no effect. ``limit_rate(None, None)`` switches it off (the default)."""
        with self._cond:
            self._chat_rate = (per_chat, chat_burst) if per_chat else None
            self._chat_buckets.clear()
            self._overall_bucket = _Bucket(overall, overall_burst) if overall else None

    def _fault_for(self, call: Call) -> _Fault | None:
        """The scripted fault for *call*, used up by one; else a flood-control 429 (raised), else ``None``."""
        scripts = self._faults.get(call.method.lower())
        if scripts:
            fault = scripts[0]
            fault.times -= 1
            if fault.times <= 0:
                scripts.pop(0)
            return fault
        if call.method.lower() not in SENDING_METHODS:
            return None
        now = time.monotonic()
        buckets = [self._overall_bucket] if self._overall_bucket else []
        if self._chat_rate:
            buckets.append(self._chat_buckets.setdefault(call.chat_id, _Bucket(*self._chat_rate)))
        wait = max((bucket.wait(now) for bucket in buckets), default=0.0)
        if wait > 0:
            call.fault = "rate"
            raise too_many_requests(max(1, math.ceil(wait)))
        for bucket in buckets:
            bucket.level -= 1
        return None

    def _faulted(self, call: Call, fault: _Fault) -> tuple[int, str, bytes]:
        call.fault = fault.kind
        if fault.kind == "429":
            raise too_many_requests(fault.retry_after)
        if fault.kind == "400":
            raise ApiError(400, fault.description)
        if fault.kind == "5xx" and not fault.html:
            raise ApiError(fault.status, HTTPStatus(fault.status).phrase)
        if fault.kind == "5xx":
            call.error = f"{fault.status} (HTML page)"
            return fault.status, "text/html", NGINX_502.replace(b"502", str(fault.status).encode())
        if fault.kind == "stall":
            self._stopped.wait(fault.delay)
        call.error = "connection closed without an answer"
        raise Hangup

    # -- webhook delivery --------------------------------------------------------------------------------------------

    def balance_webhook(self, *urls: str) -> None:
        """Stand a load balancer in front of the webhook: successive delivery attempts (redeliveries included) go to
        *urls* in turn, the first one first, instead of the URL set with ``setWebhook`` (which must still be set).
        No *urls*: back to that URL."""
        with self._cond:
            self._targets = [_check_local_url(url) for url in urls]
            self._target_turn = itertools.count()  # the next attempt goes to urls[0]

    async def webhook_done(self, count: int = 1, *, timeout: float = 10) -> list[Delivery]:
        """Wait until *count* updates in all have left the webhook queue (delivered with a 2xx, or given up after
        :attr:`webhook_retries` redeliveries); returns every delivery attempt so far."""
        return await self._until(
            lambda: list(self.deliveries) if self._webhook_done >= count else None,
            timeout,
            lambda: f"{count} updates delivered to the webhook; attempts: {self.deliveries}",
        )

    def _deliver_updates(self) -> None:
        """The deliverer thread: POSTs the first pending update to the webhook while one is set."""
        update_id, attempt = 0, 0
        while True:
            with self._cond:
                while not self._stopped.is_set() and not (self.webhook and self._updates):
                    self._cond.wait()
                if self._stopped.is_set():
                    return
                update, hook = self._updates[0], dict(self.webhook)
                if update["update_id"] != update_id:
                    update_id, attempt = update["update_id"], 0
                if hook["allowed_updates"] and not set(update) & set(hook["allowed_updates"]):
                    self._updates.pop(0)  # Telegram does not keep what the bot did not ask for
                    continue
                attempt += 1
                url = self._targets[next(self._target_turn) % len(self._targets)] if self._targets else hook["url"]
            delivery = Delivery(update, url, attempt, time.monotonic())
            delivery.status, delivery.error = _post_json(url, update, hook["secret_token"], self.webhook_timeout)
            with self._cond:
                self.deliveries.append(delivery)
                if delivery.error:
                    self._webhook_error = (int(time.time()), delivery.error)
                if delivery.ok or attempt > self.webhook_retries:  # done with this update
                    if self._updates and self._updates[0] is update:
                        self._updates.pop(0)
                    self._webhook_done += 1
                else:  # back off before redelivering it
                    deadline = time.monotonic() + self.webhook_backoff * 2 ** (attempt - 1)
                    while not self._stopped.is_set() and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)

    # -- the bot's side, for assertions ------------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        """Every call of *method* (case-insensitive), in order."""
        with self._cond:
            return [c for c in self.calls if c.method.lower() == method.lower()]

    async def bot_replied(
        self,
        chat_id: int | None = None,
        *,
        methods: Iterable[str] = ("sendMessage", "sendDocument", "sendPhoto"),
        timeout: float = 10,
    ) -> Call:
        """The next call of one of *methods* (to *chat_id* if given) not yet returned by ``bot_replied`` /
        ``wait_for``. Waits up to *timeout* seconds; raises AssertionError listing the calls seen otherwise."""
        wanted = {m.lower() for m in methods}

        def matches(call: Call) -> bool:
            return call.method.lower() in wanted and (chat_id is None or _same(call.chat_id, chat_id))

        return await self._next_call(matches, timeout, f"{'/'.join(methods)} to chat {chat_id or 'any'}")

    async def wait_for(self, method: str, *, timeout: float = 10, **match: Any) -> Call:
        """The next not yet consumed call of *method* whose params equal *match* (``text=`` also matches a
        caption; a callable value is a predicate on the param). Raises AssertionError after *timeout* seconds."""

        def matches(call: Call) -> bool:
            if call.method.lower() != method.lower():
                return False
            for key, expected in match.items():
                actual = call.text if key == "text" else call.params.get(key)
                if not (expected(actual) if callable(expected) else _same(actual, expected)):
                    return False
            return True

        return await self._next_call(matches, timeout, f"{method} {match or ''}".strip())

    async def _next_call(self, matches: Callable[[Call], bool], timeout: float, what: str) -> Call:
        def take() -> Call | None:
            for index, call in enumerate(self.calls):
                if index not in self._consumed and call.fault is None and matches(call):
                    self._consumed.add(index)
                    return call
            return None

        def seen() -> str:
            return f"no {what}; calls seen: {[str(c) for c in self.calls if c.method != 'getUpdates'] or 'none'}"

        return await self._until(take, timeout, seen)

    async def _until(self, check: Callable[[], T | None], timeout: float, failure: Callable[[], str]) -> T:
        """*check()*'s first not-None value (called holding the lock), polled for up to *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if (value := check()) is not None:
                    return value
                if time.monotonic() >= deadline:
                    raise AssertionError(f"within {timeout} s: {failure()}")
            await asyncio.sleep(0.005)

    # -- request handling (server threads) ---------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str
    ) -> tuple[int, str, bytes]:
        """Serve ``/bot<token>/<method>`` and ``/file/bot<token>/<file path>``."""
        path = unquote(path)  # PTB's File.download quotes the path: the token's ':' arrives as %3A
        kind, _, rest = path.partition("bot")
        token, _, name = rest.partition("/")
        try:
            if kind not in ("/", "/file/"):
                raise ApiError(404, "Not Found")
            if token != self.TOKEN:
                raise ApiError(401, "Unauthorized")
            if kind == "/file/":
                return self._download(name)
            params, files = decode_params(body, content_type, query)
        except ApiError as exc:
            return exc.response()
        except ValueError as exc:
            return bad_request(str(exc)).response()
        call = Call(name, params, files)
        try:
            response = self._answer(call)
            call.status = response[0]
            return response
        finally:
            with self._cond:
                self.calls.append(call)

    def _download(self, file_path: str) -> tuple[int, str, bytes]:
        """A file's bytes (or a scripted fault: ``fail("download", ...)``); raises Hangup for a dropped connection."""
        call = Call("download", {"file_path": file_path})
        try:
            with self._cond:
                fault = self._fault_for(call)
                stored = self._files_by_path.get(file_path)
            if fault is not None:
                status, content_type, body = self._faulted(call, fault)
            elif stored is None:
                raise ApiError(404, "Not Found")
            else:
                status, content_type, body = 200, "application/octet-stream", stored.data
        except ApiError as exc:
            call.error = exc.description
            call.status = exc.status
            raise
        finally:
            with self._cond:
                self.downloads.append(call)
        call.status = status
        return status, content_type, body

    def _answer(self, call: Call) -> tuple[int, str, bytes]:
        """The answer to *call*, its side effects done; raises Hangup for a dropped connection."""
        handler = getattr(self, f"_api_{call.method.lower()}", None)
        try:
            if handler is None:
                raise ApiError(404, "Not Found")
            with self._cond:
                fault = self._fault_for(call)
            if fault is not None:
                return self._faulted(call, fault)
            if handler == self._api_getupdates:  # waits on the condition itself
                call.result = handler(call.params, call.files)
            else:
                with self._cond:
                    call.result = handler(call.params, call.files)
        except ApiError as exc:
            call.error = exc.description
            return exc.response()
        except (KeyError, TypeError, ValueError) as exc:
            call.error = f"Bad Request: {exc!r}"
            return ApiError(400, call.error).response()
        return json_response(200, {"ok": True, "result": call.result})

    # Each _api_<lowercased method> takes (params, files) and returns the result or raises ApiError.
    # All but getUpdates run holding self._cond.

    def _api_getme(self, params: JSONDict, files: dict) -> JSONDict:
        return self.bot_user

    def _api_close(self, params: JSONDict, files: dict) -> bool:
        return True

    _api_logout = _api_close

    def _api_setwebhook(self, params: JSONDict, files: dict) -> bool:
        if not params.get("url"):
            return self._api_deletewebhook(params, files)
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_RE.match(str(secret)):
            raise bad_request("secret token contains unallowed characters")
        max_connections = int(params.get("max_connections") or 40)
        if not 1 <= max_connections <= 100:
            raise bad_request("invalid max_connections specified")
        allowed = params.get("allowed_updates")
        self.webhook = {
            "url": _check_local_url(str(params["url"])),
            "secret_token": secret,
            "allowed_updates": allowed if isinstance(allowed, list) else [],
            "max_connections": max_connections,
        }
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook_error = None
        self._cond.notify_all()
        return True

    def _api_deletewebhook(self, params: JSONDict, files: dict) -> bool:
        self.webhook_deleted += 1
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _api_getwebhookinfo(self, params: JSONDict, files: dict) -> JSONDict:
        info: JSONDict = {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}
        if not self.webhook:
            return info
        info |= {"url": self.webhook["url"], "max_connections": self.webhook["max_connections"]}
        info["ip_address"] = "127.0.0.1"
        if self.webhook["allowed_updates"]:
            info["allowed_updates"] = self.webhook["allowed_updates"]
        if self._webhook_error:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    def _api_getupdates(self, params: JSONDict, files: dict) -> list[JSONDict]:
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), self.long_poll_cap)
        with self._cond:
            if self.webhook:
                raise ApiError(409, WEBHOOK_CONFLICT)
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            elif offset < 0:
                self._updates = self._updates[offset:]
            while not self._updates and not self._stopped.is_set() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return list(self._updates[:limit])

    def _api_setmycommands(self, params: JSONDict, files: dict) -> bool:
        key = scope_key(params)
        self.scoped_commands[key] = check_commands(params.get("commands"))
        if key[0] == "default":
            self.commands[key[1]] = self.scoped_commands[key]
        return True

    def _api_getmycommands(self, params: JSONDict, files: dict) -> list[JSONDict]:
        return list(self.scoped_commands.get(scope_key(params), []))

    def _api_deletemycommands(self, params: JSONDict, files: dict) -> bool:
        key = scope_key(params)
        self.scoped_commands.pop(key, None)
        if key[0] == "default":
            self.commands.pop(key[1], None)
        return True

    def _bot_message(self, params: JSONDict, content: JSONDict) -> JSONDict:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        if not isinstance(chat_id, int):
            raise bad_request("chat not found")
        reply = params.get("reply_parameters") or (
            {"message_id": params["reply_to_message_id"]} if params.get("reply_to_message_id") else None
        )
        if reply:
            target = self._find_message(int(reply.get("chat_id") or chat_id), int(reply["message_id"]))
            if target is not None:
                content["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            elif not (reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply")):
                raise bad_request("message to be replied not found")
        if markup := inline_keyboard(params):
            content["reply_markup"] = markup
        chat = self._chats.get(chat_id) or {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        return self._store_message(chat, self.bot_user, content)

    def _api_sendmessage(self, params: JSONDict, files: dict) -> JSONDict:
        return self._bot_message(params, {"text": check_text(params.get("text"), params.get("parse_mode"))})

    def _upload(self, params: JSONDict, files: dict[str, Upload], name: str) -> Upload:
        value = params.get(name)
        if name in files:
            return files[name]
        if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
            return files[value[9:]]
        if isinstance(value, str) and value in self._files:
            stored = self._files[value]
            return stored.file_path.rsplit("/", 1)[-1], stored.data
        raise bad_request(f"there is no {name} in the request")

    def _api_senddocument(self, params: JSONDict, files: dict) -> JSONDict:
        filename, data = self._upload(params, files, "document")
        document = {**self._new_file(data, "documents", _extension(filename)), "file_name": filename}
        return self._bot_message(params, {"document": document, **check_caption(params)})

    def _api_sendphoto(self, params: JSONDict, files: dict) -> JSONDict:
        _, data = self._upload(params, files, "photo")
        return self._bot_message(params, {"photo": self._photo_sizes(data), **check_caption(params)})

    def _api_sendchataction(self, params: JSONDict, files: dict) -> bool:
        if params.get("chat_id") in (None, ""):
            raise bad_request("chat_id is empty")
        return True

    def _api_getfile(self, params: JSONDict, files: dict) -> JSONDict:
        stored = self._files.get(str(params.get("file_id")))
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.file_size > MAX_GETFILE_SIZE:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    def _api_answercallbackquery(self, params: JSONDict, files: dict) -> bool:
        query_id = str(params.get("callback_query_id"))
        if query_id not in self._open_callbacks:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        if len(params.get("text") or "") > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        self._open_callbacks.discard(query_id)
        return True

    def _edit(self, params: JSONDict, changes: JSONDict) -> JSONDict | bool:
        if params.get("inline_message_id"):
            return True  # Telegram answers True for inline messages
        message = self._find_message(int(params.get("chat_id") or 0), int(params.get("message_id") or 0))
        if message is None:
            raise bad_request("message to edit not found")
        old = {k: v for k, v in message.items() if k not in ("edit_date", "reply_markup")}
        new = {k: v for k, v in (old | changes).items() if v is not None}
        if markup := inline_keyboard(params):  # no reply_markup in an edit: Telegram drops the keyboard
            new["reply_markup"] = markup
        if new == {k: v for k, v in message.items() if k != "edit_date"}:
            raise bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message"
            )
        message.clear()
        message.update(new, edit_date=int(time.time()))
        return message

    def _api_editmessagetext(self, params: JSONDict, files: dict) -> JSONDict | bool:
        text = check_text(params.get("text"), params.get("parse_mode"), too_long="MESSAGE_TOO_LONG")
        return self._edit(params, {"text": text})

    def _api_editmessagecaption(self, params: JSONDict, files: dict) -> JSONDict | bool:
        return self._edit(params, check_caption(params) or {"caption": None})

    def _api_editmessagereplymarkup(self, params: JSONDict, files: dict) -> JSONDict | bool:
        return self._edit(params, {})

    def _api_deletemessage(self, params: JSONDict, files: dict) -> bool:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        message = self._find_message(chat_id, message_id)
        if not self.can_delete:
            raise bad_request("message can't be deleted")
        if message is None:
            raise bad_request("message to delete not found")
        self.messages[chat_id].remove(message)
        self.deleted.append((chat_id, message_id))
        return True


def _user(who: Who) -> JSONDict:
    user: JSONDict = {"id": who.get("user_id", 1001), "is_bot": False, "first_name": who.get("first_name", "Ada")}
    if username := who.get("username"):
        user["username"] = username
    if language_code := who.get("language_code", "en"):
        user["language_code"] = language_code
    return user


def _caption(caption: str | None) -> JSONDict:
    return {} if caption is None else {"caption": caption, **command_entities("caption_entities", caption)}


def _extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1] if "." in filename else "bin"


def _same(actual: Any, expected: Any) -> bool:
    return actual == expected or (actual is not None and str(actual) == str(expected))


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A started :class:`FakeTelegram`, stopped after the test."""
    with FakeTelegram() as fake:
        yield fake
