"""Delivery: what the bot sends reaches Telegram, or the log says why it did not.

Two layers, both under the Telegram transport (the router and the plugins still just call
``transport.send``):

- :class:`SendLimiter`, a python-telegram-bot ``BaseRateLimiter``, sees every Bot API request but
  ``getUpdates``. It keeps the send rate under Telegram's limits (aiolimiter leaky buckets: all chats,
  each chat with a short burst, each group per minute), so a burst of replies queues instead of drawing
  ``429 Too Many Requests``; and it retries what is worth retrying: a 429 after the ``retry_after``
  Telegram asked for (that chat waits; the others go on), network errors, timeouts and 5xx answers
  after a bounded exponential backoff, a group that became a supergroup at its new chat id.
- :class:`Delivery` sends one :class:`core.chat.Reply`. It adapts beforehand what Telegram would
  refuse (texts over 4096 UTF-16 code units are split or sent as ``text.txt``, captions over 1024 go as a
  separate message, photos over 10 MB, over 10,000 px in width + height or with a side ratio over 20
  go as a document), and adapts after a ``400 Bad Request`` where it can ("message is too long" → as
  ``text.txt``; "can't parse entities" → as plain text; bad buttons → without them; a photo refused → as
  a document; an edit of a message that is gone → sent anew; "message is not modified" → nothing to do).

When retries are exhausted, or a 400 cannot be adapted, :class:`DeliveryFailed` is raised: a
:class:`core.errors.UserFacingError`, so the router logs the reason and apologises to the user (that
apology rides the same retries). Nothing here logs a URL: the bot token is part of every Bot API URL.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter

from core.chat import Button, Reply
from core.errors import UserFacingError
from core.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_SPLIT = 3  # a text that takes more messages than this is sent as a .txt file
TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096, counted in UTF-16 code units
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)  # 1024
PHOTO_MAX_BYTES = 10 * 1024 * 1024  # sendPhoto: "The photo must be at most 10 MB in size"
PHOTO_MAX_SIDES = 10_000  # "The photo's width and height must not exceed 10000 in total"
PHOTO_MAX_RATIO = 20  # "Width and height ratio must be at most 20"
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # files the Bot API accepts for upload
#: The limiter keeps this share of each configured rate: network jitter must not bring two requests
#: closer together at Telegram than Telegram allows (measured: bench/delivery_bench.py).
HEADROOM = 0.95
#: Methods that create a message: they count against the per-chat and per-group limits.
MESSAGE_METHODS = frozenset(
    {
        *("sendmessage", "sendphoto", "senddocument", "sendmediagroup", "sendaudio", "sendvideo", "sendanimation"),
        *("sendvoice", "sendvideonote", "sendsticker", "sendlocation", "sendvenue", "sendcontact", "sendpoll"),
        *("senddice", "sendinvoice", "sendgame", "sendpaidmedia", "copymessage", "copymessages", "forwardmessage"),
        "forwardmessages",
    }
)
#: Methods that count against the overall limit only.
EDIT_METHODS = frozenset({"editmessagetext", "editmessagecaption", "editmessagemedia", "editmessagereplymarkup"})


class DeliveryFailed(UserFacingError):
    """Telegram did not take a message: retries exhausted, or a refusal that could not be adapted.

    The user sees the generic apology; ``detail`` (logged) says which request failed and why.
    """

    key = "error.generic"


# ---------------------------------------------------------------------------------------------- texts


def utf16_len(text: str) -> int:
    """The length Telegram measures: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 code units."""
    if utf16_len(text) <= limit:
        return len(text)
    units = 0
    for n, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return n
    return len(text)


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-16 code units, at line breaks where possible."""
    pieces: list[str] = []
    current, size = "", 0
    for line in text.splitlines(keepends=True):
        while utf16_len(line) > limit:  # a single line longer than a message: cut it hard
            if current:
                pieces.append(current)
                current, size = "", 0
            n = max(1, _cut(line, limit))
            pieces.append(line[:n])
            line = line[n:]
        units = utf16_len(line)
        if size + units > limit:
            pieces.append(current)
            current, size = "", 0
        current += line
        size += units
    if current or not pieces:
        pieces.append(current)
    return [p.rstrip("\n") or p for p in pieces]


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 code units."""
    return text[: _cut(text, limit)]


def markup(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    """Telegram's inline keyboard for button rows (None for none)."""
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


# ---------------------------------------------------------------------------------------------- photos


def photo_problem(data: bytes) -> tuple[str | None, str]:
    """Why Telegram would refuse ``data`` as a photo (None: it would not), and a file name for it.

    Reads the image header only (CPU work all the same: call it in the worker pool).
    """
    from PIL import Image

    problem: str | None = None
    if len(data) > PHOTO_MAX_BYTES:
        problem = f"{len(data) / 1_048_576:.1f} MB, over the 10 MB Telegram takes for a photo"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            name = f"image.{(image.format or 'bin').lower().replace('jpeg', 'jpg')}"
    except Image.DecompressionBombError:
        return "too many pixels for a photo", "image.bin"
    except Exception:  # not an image Pillow reads: let Telegram judge (a refusal goes as a document)
        return problem, "image.bin"
    if problem is None and width + height > PHOTO_MAX_SIDES:
        problem = f"{width}x{height}: width + height over {PHOTO_MAX_SIDES}"
    if problem is None and max(width, height) > PHOTO_MAX_RATIO * max(1, min(width, height)):
        problem = f"{width}x{height}: side ratio over {PHOTO_MAX_RATIO}"
    return problem, name


# ---------------------------------------------------------------------------------------------- refusals


def refusal(err: BadRequest) -> str:
    """What kind of 400 ``err`` is: ``not_modified``, ``gone`` (the message to edit), ``caption_too_long``,
    ``too_long``, ``entities``, ``buttons``, or ``other``."""
    text = err.message.lower()
    if "not modified" in text:
        return "not_modified"
    if "message to edit not found" in text or "can't be edited" in text or "message_id_invalid" in text:
        return "gone"
    if "caption is too long" in text or "caption_too_long" in text:
        return "caption_too_long"
    if "too long" in text or "too_long" in text:
        return "too_long"
    if "entit" in text or "parse" in text or "start tag" in text or "end tag" in text:
        return "entities"
    if "button" in text or "keyboard" in text or "reply markup" in text:
        return "buttons"
    return "other"


def is_transient(err: TelegramError) -> bool:
    """Whether retrying the very same request may work: a network error, a timeout or a 5xx answer."""
    if not isinstance(err, NetworkError) or isinstance(err, BadRequest):
        return False
    return "entity too large" not in err.message.lower()  # 413: the same upload fails again


def _why(err: BaseException) -> str:
    return redact(f"{type(err).__name__}: {err}")[:300]


# ---------------------------------------------------------------------------------------------- limiter


class SendLimiter(BaseRateLimiter[int]):
    """Rate limits and retries for every Bot API request (``rate_limit_args``: retries for that request).

    Why our own ``BaseRateLimiter`` and not PTB's ``AIORateLimiter(max_retries=...)``: that one retries
    429s only (not network errors, timeouts or 5xx), halts *every* request for a 429 in one chat, and has
    no per-chat limit for private chats. This class uses the same library (aiolimiter) and PTB hook.
    """

    def __init__(
        self,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        overall: float = 30.0,
        per_chat: float = 1.0,
        chat_burst: int = 3,
        per_group: float = 20.0,
        headroom: float = HEADROOM,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._overall = AsyncLimiter(max(1.0, overall), max(1.0, overall) / (overall * headroom)) if overall else None
        self._chat = (chat_burst, chat_burst / (per_chat * headroom)) if per_chat else None
        self._group = (per_group, 60.0 / headroom) if per_group else None  # per_group a minute
        self._chats: dict[Any, AsyncLimiter] = {}
        self._groups: dict[Any, AsyncLimiter] = {}
        self._paused: dict[Any, float] = {}  # chat -> loop time until which Telegram asked us to wait

    @classmethod
    def from_config(cls, telegram: dict[str, Any]) -> SendLimiter:
        """The limiter the ``telegram:`` config section describes."""
        return cls(
            retries=telegram["send_retries"],
            backoff=telegram["send_backoff"],
            max_wait=telegram["send_max_wait"],
            overall=telegram["rate_overall"],
            per_chat=telegram["rate_per_chat"],
            chat_burst=telegram["chat_burst"],
            per_group=telegram["rate_per_group"],
        )

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    @staticmethod
    def _limiter(table: dict[Any, AsyncLimiter], key: Any, rate: tuple[float, float]) -> AsyncLimiter:
        if len(table) > 1024:  # forget chats whose bucket has drained (as AIORateLimiter does)
            for old, limiter in list(table.items()):
                if old != key and limiter.has_capacity(limiter.max_rate):
                    del table[old]
        if key not in table:
            table[key] = AsyncLimiter(*rate)
        return table[key]

    async def _pace(self, method: str, chat: Any) -> None:
        """Wait until ``method`` to ``chat`` may go: its chat's and group's turn, Telegram's pause, the overall rate."""
        if method in MESSAGE_METHODS and chat is not None:
            group = isinstance(chat, str) or (isinstance(chat, int) and chat < 0)
            if group and self._group:
                await self._limiter(self._groups, chat, self._group).acquire()
            if self._chat:
                await self._limiter(self._chats, chat, self._chat).acquire()
        loop = asyncio.get_running_loop()
        while chat is not None and (left := self._paused.get(chat, 0.0) - loop.time()) > 0:
            await asyncio.sleep(left)
        if (method in MESSAGE_METHODS or method in EDIT_METHODS) and self._overall:
            await self._overall.acquire()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Send one request within the rate limits; retry it after a 429, a network error, a timeout or a 5xx."""
        retries = self.retries if rate_limit_args is None else rate_limit_args
        method = endpoint.lower()
        migrated = False
        attempt = 0
        while True:
            chat = data.get("chat_id")
            await self._pace(method, chat)
            failure: TelegramError
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as err:
                failure = err
                wait = err._retry_after.total_seconds()  # as PTB's AIORateLimiter reads it
                if attempt >= retries or wait > self.max_wait:
                    self._give_up(endpoint, chat, attempt, err)
                    raise
                if chat is not None:
                    loop = asyncio.get_running_loop()
                    self._paused[chat] = max(self._paused.get(chat, 0.0), loop.time() + wait)
            except ChatMigrated as err:  # a group became a supergroup: same request, new chat id
                if migrated or "chat_id" not in data:
                    raise
                log.info("%s: chat %s is now %s; sending there", endpoint, chat, err.new_chat_id)
                data["chat_id"], migrated = err.new_chat_id, True
                continue
            except TelegramError as err:
                failure = err
                if not is_transient(err):
                    raise
                if attempt >= retries:
                    self._give_up(endpoint, chat, attempt, err)
                    raise
                wait = self.backoff * 2**attempt * random.uniform(1.0, 1.25)  # jitter: no herd when Telegram is back
            attempt += 1
            log.info(
                "%s to chat %s failed (%s); retry %d of %d in %.1f s",
                endpoint,
                chat,
                _why(failure),
                attempt,
                retries,
                wait,
            )
            await asyncio.sleep(wait)

    def _give_up(self, endpoint: str, chat: Any, attempt: int, err: TelegramError) -> None:
        log.warning("%s to chat %s failed after %d attempts: %s", endpoint, chat, attempt + 1, _why(err))


# ---------------------------------------------------------------------------------------------- replies


class Delivery:
    """Sends :class:`Reply` objects (and edits, deletes, chat actions) through a PTB bot that has a
    :class:`SendLimiter`; ``run_cpu`` runs the photo checks off the event loop."""

    def __init__(self, bot: Bot, run_cpu: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self.bot = bot
        self.run_cpu = run_cpu

    async def send(self, chat_id: int, reply: Reply) -> int | None:
        """Send ``reply``; the id of its last message. :class:`DeliveryFailed` when Telegram did not take it."""
        keyboard = markup(reply.buttons)
        text = reply.text
        if reply.photo is None and reply.document is None:
            return await self._text(chat_id, text, keyboard)
        caption = text if text and utf16_len(text) <= CAPTION_LIMIT else None
        separate = bool(text) and caption is None  # the text goes in a message of its own, with the buttons
        media_keyboard = None if separate else keyboard
        if reply.photo is not None:
            sent, captioned = await self._photo(chat_id, reply.photo, caption, media_keyboard)
        else:
            assert reply.document is not None
            sent, captioned = await self._document(
                chat_id, reply.document.data, reply.document.filename, caption, media_keyboard
            )
        if caption is not None and not captioned:
            separate = True
        if not separate:
            return sent
        return await self._text(chat_id, text, keyboard)

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        """Change a message's text and buttons; a message that is gone (or cannot be edited) is sent anew,
        a text over one message's length is edited to its first part and the rest sent after it."""
        pieces = split_text(text)
        head = pieces[0]
        rest = text[len(head) :].lstrip("\n") if len(pieces) > 1 else ""
        keyboard = None if rest else markup(buttons)
        params: dict[str, Any] = {"reply_markup": keyboard}
        tried: set[str] = set()
        while True:
            try:
                await self.bot.edit_message_text(head, chat_id, message_id, **_plain(params))
                break
            except BadRequest as err:
                kind = refusal(err)
                if kind == "not_modified":
                    break
                if kind in ("gone", "too_long") and kind not in tried:
                    log.info("editMessageText in chat %s refused (%s): sending the text anew", chat_id, err.message)
                    await self.send(chat_id, Reply(text, buttons))
                    return
                params = self._adapted("editMessageText", chat_id, err, kind, params, tried)
            except TelegramError as err:
                raise DeliveryFailed(f"editMessageText to chat {chat_id}: {_why(err)}") from err
        if rest:
            await self.send(chat_id, Reply(rest, buttons))

    async def delete(self, chat_id: int, message_id: int) -> bool:
        """Delete a message; False when Telegram would not (not allowed, gone, or still failing)."""
        try:
            return bool(await self.bot.delete_message(chat_id, message_id))
        except TelegramError as err:
            log.info("could not delete message %s in chat %s: %s", message_id, chat_id, _why(err))
            return False

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        """Show "typing…" (or another action); never raises: it only decorates the wait (one retry)."""
        try:
            await self.bot.send_chat_action(chat_id, action, rate_limit_args=1)
        except TelegramError as err:
            log.info("sendChatAction to chat %s failed: %s", chat_id, _why(err))

    # ------------------------------------------------------------------ the pieces
    def _adapted(
        self, method: str, chat_id: int, err: BadRequest, kind: str, params: dict[str, Any], tried: set[str]
    ) -> dict[str, Any]:
        """``params`` changed so that the 400 ``err`` (of ``kind``) should not recur; DeliveryFailed if none does."""
        useless = kind == "buttons" and not params.get("reply_markup")
        if kind in tried or kind not in ("entities", "buttons") or useless:
            raise DeliveryFailed(f"{method} to chat {chat_id} refused: {_why(err)}") from err
        tried.add(kind)
        if kind == "entities":
            log.warning("%s to chat %s refused (%s): sending as plain text", method, chat_id, err.message)
            return {**params, "parse_mode": None, "entities": None, "caption_entities": None}
        log.warning("%s to chat %s refused (%s): sending without the buttons", method, chat_id, err.message)
        return {**params, "reply_markup": None}

    async def _text(self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None) -> int | None:
        pieces = split_text(text)
        if len(pieces) > MAX_SPLIT:
            return await self._text_file(chat_id, text, keyboard)
        last: int | None = None
        for n, piece in enumerate(pieces):
            last = await self._message(chat_id, piece, keyboard if n == len(pieces) - 1 else None)
        return last

    async def _message(self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None) -> int:
        params: dict[str, Any] = {"reply_markup": keyboard}
        tried: set[str] = set()
        while True:
            try:
                sent: Message = await self.bot.send_message(chat_id, text, **_plain(params))
                return sent.message_id
            except BadRequest as err:
                kind = refusal(err)
                if kind == "too_long" and kind not in tried:
                    log.warning("sendMessage to chat %s refused (%s): sending as text.txt", chat_id, err.message)
                    return await self._text_file(chat_id, text, params["reply_markup"])
                params = self._adapted("sendMessage", chat_id, err, kind, params, tried)
            except TelegramError as err:
                raise DeliveryFailed(f"sendMessage to chat {chat_id}: {_why(err)}") from err

    async def _text_file(self, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None) -> int:
        preview = truncate(text[:200].rsplit("\n", 1)[0], 1000) or None
        sent, _ = await self._document(chat_id, text.encode("utf-8"), "text.txt", preview, keyboard)
        return sent

    async def _photo(
        self, chat_id: int, data: bytes, caption: str | None, keyboard: InlineKeyboardMarkup | None
    ) -> tuple[int, bool]:
        """Send a photo (as a document where Telegram would refuse it); ``(message id, caption sent)``."""
        problem, filename = await self.run_cpu(photo_problem, data)
        if problem is not None:
            log.info("a photo for chat %s goes as a document: %s", chat_id, problem)
            return await self._document(chat_id, data, filename, caption, keyboard)
        params: dict[str, Any] = {"caption": caption, "reply_markup": keyboard}
        tried: set[str] = set()
        while True:
            try:
                sent: Message = await self.bot.send_photo(chat_id, data, **_plain(params))
                return sent.message_id, params["caption"] is not None
            except BadRequest as err:
                kind = refusal(err)
                if kind == "caption_too_long" and kind not in tried:
                    tried.add(kind)
                    params = {**params, "caption": None, "reply_markup": None}
                    continue
                if kind in ("entities", "buttons"):
                    params = self._adapted("sendPhoto", chat_id, err, kind, params, tried)
                    continue
                log.warning("sendPhoto to chat %s refused (%s): sending as a document", chat_id, err.message)
                return await self._document(chat_id, data, filename, params["caption"], params["reply_markup"])
            except TelegramError as err:
                raise DeliveryFailed(f"sendPhoto to chat {chat_id}: {_why(err)}") from err

    async def _document(
        self, chat_id: int, data: bytes, filename: str, caption: str | None, keyboard: InlineKeyboardMarkup | None
    ) -> tuple[int, bool]:
        """Send a file; ``(message id, caption sent)``."""
        if len(data) > DOCUMENT_MAX_BYTES:
            raise DeliveryFailed(f"sendDocument to chat {chat_id}: {len(data)} bytes, over the Bot API's 50 MB")
        params: dict[str, Any] = {"caption": caption, "reply_markup": keyboard}
        tried: set[str] = set()
        while True:
            try:
                sent: Message = await self.bot.send_document(chat_id, data, filename=filename, **_plain(params))
                return sent.message_id, params["caption"] is not None
            except BadRequest as err:
                kind = refusal(err)
                if kind == "caption_too_long" and kind not in tried:
                    tried.add(kind)
                    params = {**params, "caption": None, "reply_markup": None}
                    continue
                params = self._adapted("sendDocument", chat_id, err, kind, params, tried)
            except TelegramError as err:
                raise DeliveryFailed(f"sendDocument to chat {chat_id}: {_why(err)}") from err


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to pass on (None values left out: PTB's defaults apply)."""
    return {k: v for k, v in params.items() if v is not None}
