"""Delivery: what the bot sends reaches Telegram, or the log says why it did not.

Two layers, both under the Telegram transport (the router and the plugins still just call
``transport.send``):

- :class:`SendLimiter`, a python-telegram-bot ``BaseRateLimiter``, sees every Bot API request but
  ``getUpdates``. It keeps the send rate under Telegram's limits (token buckets: all chats, each chat
  with a short burst, each group per minute; see :class:`Pacer`), so a burst of replies queues instead of drawing
  ``429 Too Many Requests``; and it retries what is worth retrying: a 429 after the ``retry_after``
  Telegram asked for (that chat waits; the others go on), network errors, timeouts and 5xx answers
  after a bounded exponential backoff, a group that became a supergroup at its new chat id.
- :class:`Delivery` sends one :class:`core.contract.chat.Reply`. It adapts beforehand what Telegram would
  refuse (texts over 4096 UTF-16 code units are split or sent as ``text.txt``, captions over 1024 go as a
  separate message, photos over 10 MB, over 10,000 px in width + height or with a side ratio over 20
  go as a document), and adapts after a ``400 Bad Request`` where it can ("message is too long" → as
  ``text.txt``; "can't parse entities" → as plain text; bad buttons → without them; a photo refused → as
  a document; an edit of a message that is gone → sent anew; "message is not modified" → nothing to do).

When retries are exhausted, or a 400 cannot be adapted, :class:`DeliveryFailed` is raised: a
:class:`core.contract.errors.UserFacingError`, so the router logs the reason and apologises to the user (that
apology rides the same retries). Nothing here logs a URL: the bot token is part of every Bot API URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import random
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import BaseRateLimiter

from core.contract.chat import Button, Reply
from core.contract.errors import UserFacingError
from core.infra.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_SPLIT = 3  # a text that takes more messages than this is sent as a .txt file
TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096, counted in UTF-16 code units
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)  # 1024
PHOTO_MAX_BYTES = 10 * 1024 * 1024  # sendPhoto: "The photo must be at most 10 MB in size"
PHOTO_MAX_SIDES = 10_000  # "The photo's width and height must not exceed 10000 in total"
PHOTO_MAX_RATIO = 20  # "Width and height ratio must be at most 20"
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # files the Bot API accepts for upload
#: The pacer keeps this share of each configured rate, and a reserve of MARGIN seconds' worth of tokens in
#: each bucket: requests released the moment a bucket allows reach Telegram with a few milliseconds more or
#: less of latency each, and Telegram's buckets count arrivals (bench/delivery_bench.py: with the rate
#: headroom alone, right after a burst a 429 now and then).
HEADROOM = 0.98
MARGIN = 0.1
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


class _QuietUnparsedAnswers(logging.Filter):
    """PTB logs an HTML error page it could not parse (nginx's 502) at ERROR with a traceback, then raises
    the NetworkError that :class:`SendLimiter` retries and logs itself: keep it, at INFO, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith("Can not load invalid JSON data"):
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.INFO, "INFO", None, None
            record.msg, record.args = "Telegram answered with a page that is not JSON (a proxy's error page?)", None
        return True


_ptb_request_log = logging.getLogger("telegram.request.BaseRequest")
if not any(isinstance(f, _QuietUnparsedAnswers) for f in _ptb_request_log.filters):
    _ptb_request_log.addFilter(_QuietUnparsedAnswers())


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


def error_code(err: TelegramError) -> int | str:
    """The code a failed Bot API call is counted under: 400, 403, 429, a 5xx, or the kind of failure."""
    for kind, code in ((RetryAfter, 429), (ChatMigrated, 400), (BadRequest, 400), (Forbidden, 403)):
        if isinstance(err, kind):
            return code
    if isinstance(err, TimedOut):
        return "timeout"
    status = re.search(r"\((\d{3})\)", str(err))
    return int(status.group(1)) if status else ("network" if isinstance(err, NetworkError) else "other")


def _why(err: BaseException) -> str:
    """The error in one short line for the log: its type and message (no HTML page, no secret)."""
    text = str(err).split(". Parsing the server response", 1)[0]
    return redact(f"{type(err).__name__}: {text}")[:300]


# ---------------------------------------------------------------------------------------------- limiter


def is_group(chat: Any) -> bool:
    """Whether a ``chat_id`` is a group's (negative ids, ``@channel`` names): those also have a per-minute limit."""
    return isinstance(chat, str) or (isinstance(chat, int) and chat < 0)


class _Bucket:
    """A token bucket: ``rate`` tokens a second, ``burst`` at most (full at first), of which ``MARGIN``
    seconds' worth are kept in reserve where the burst allows; ``until``: Telegram's pause."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.level, self.at = rate, burst, burst, now
        self.need = min(burst, 1 + rate * MARGIN)
        self.until = 0.0

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        return max(0.0, (self.need - self.level) / self.rate, self.until - now)

    def take(self) -> None:
        self.level -= 1

    def idle(self, now: float) -> bool:
        return self.wait(now) == 0 and self.level >= self.burst


class _PauseOf:
    """Only the pause of a chat's bucket (for edits: they take no chat token)."""

    def __init__(self, of: _Bucket) -> None:
        self.of = of

    def wait(self, now: float) -> float:
        return max(0.0, self.of.until - now)

    def take(self) -> None:
        pass


class Pacer:
    """Lets requests go when every bucket they need (their chat's, their group's, the overall one) has a
    token, and takes those tokens at that same instant: a request waiting for the overall rate has not
    spent its chat's token yet, so Telegram sees the spacing the buckets allowed. Waiting requests go in
    the order they came, except that one whose chat is not ready does not hold up the others."""

    def __init__(self, overall: float, per_chat: float, chat_burst: int, per_group: float, headroom: float) -> None:
        self.overall_rate = overall * headroom
        self.overall_burst = max(1.0, overall)
        self.chat_rate = per_chat * headroom
        self.chat_burst = chat_burst
        self.group_rate = per_group / 60 * headroom
        self._overall: _Bucket | None = None
        self._chats: dict[Any, _Bucket] = {}
        self._groups: dict[Any, _Bucket] = {}
        self._waiting: list[tuple[list[_Bucket | _PauseOf], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def _bucket(self, table: dict[Any, _Bucket], key: Any, rate: float, burst: float, now: float) -> _Bucket:
        if key not in table:
            if len(table) >= 4096:  # forget chats with a full bucket and no pause
                for old in [k for k, b in table.items() if b.idle(now)]:
                    del table[old]
            table[key] = _Bucket(rate, burst, now)
        return table[key]

    def _buckets(self, method: str, chat: Any, now: float) -> list[_Bucket | _PauseOf]:
        buckets: list[_Bucket | _PauseOf] = []
        if chat is not None and (method in MESSAGE_METHODS or method in EDIT_METHODS):
            # edits wait out a pause but take no chat token; messages take one (and a group token)
            rate, burst = (self.chat_rate, self.chat_burst) if self.chat_rate else (1e9, 1e9)
            chat_bucket = self._bucket(self._chats, chat, rate, burst, now)
            if method in MESSAGE_METHODS:
                buckets.append(chat_bucket)
                if is_group(chat) and self.group_rate:
                    buckets.append(self._bucket(self._groups, chat, self.group_rate, 20, now))
            elif chat_bucket.until > now:
                buckets.append(_PauseOf(chat_bucket))
        if (method in MESSAGE_METHODS or method in EDIT_METHODS) and self.overall_rate:
            if self._overall is None:
                self._overall = _Bucket(self.overall_rate, self.overall_burst, now)
            buckets.append(self._overall)
        return buckets

    def cluster_budgets(self, method: str, chat: Any) -> list[tuple[str, float, float]]:
        """The same limits as budgets for :meth:`core.infra.shared.SharedRedis.reserve_slots` (cluster mode: every
        process sending with this bot token shares them): ``(name, interval, burst)``, bursts less the reserve."""
        if method not in MESSAGE_METHODS and method not in EDIT_METHODS:
            return []
        budgets: list[tuple[str, float, float]] = []

        def budget(name: str, rate: float, burst: float) -> None:
            budgets.append((f"telegram:{name}", 1 / rate, max(1.0, burst - rate * MARGIN)))

        if chat is not None and method in MESSAGE_METHODS:
            if self.chat_rate:
                budget(f"chat:{chat}", self.chat_rate, self.chat_burst)
            if self.group_rate and is_group(chat):
                budget(f"group:{chat}", self.group_rate, 20)
        if self.overall_rate:
            budget("all", self.overall_rate, self.overall_burst)
        return budgets

    def pause(self, chat: Any, seconds: float) -> None:
        """Telegram asked to wait ``seconds`` before sending to ``chat`` again."""
        now = asyncio.get_running_loop().time()
        rate, burst = (self.chat_rate, self.chat_burst) if self.chat_rate else (1e9, 1e9)
        bucket = self._bucket(self._chats, chat, rate, burst, now)
        bucket.until = max(bucket.until, now + seconds)

    async def turn(self, method: str, chat: Any) -> None:
        """Wait until ``method`` to ``chat`` may go now (and account for it)."""
        loop = asyncio.get_running_loop()
        buckets = self._buckets(method, chat, loop.time())
        if not buckets:
            return
        if not self._waiting and all(b.wait(loop.time()) == 0 for b in buckets):
            for bucket in buckets:
                bucket.take()
            return
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((buckets, future))
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._dispatch(), name="aipbot-send-pacer")
        await future

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while self._waiting:
            now, soonest, still = loop.time(), float("inf"), []
            for buckets, future in self._waiting:
                if future.done():  # the caller was cancelled
                    continue
                wait = max(b.wait(now) for b in buckets)
                if wait == 0:
                    for bucket in buckets:
                        bucket.take()
                    future.set_result(None)
                else:
                    soonest = min(soonest, wait)
                    still.append((buckets, future))
            self._waiting = still
            if still:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), soonest)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, future in self._waiting:
            future.cancel()
        self._waiting = []


class SendLimiter(BaseRateLimiter[int]):
    """Rate limits and retries for every Bot API request (``rate_limit_args``: attempts for that request in
    all, so ``1`` means no retry — PTB drops a falsy ``rate_limit_args``, so 0 cannot mean "no retries").

    Why our own ``BaseRateLimiter`` and not PTB's ``AIORateLimiter(max_retries=...)``: that one retries
    429s only (not network errors, timeouts or 5xx), halts *every* request for a 429 in one chat, has no
    per-chat limit for private chats, and takes its limiters' capacity one after the other (aiolimiter
    has no way to take two at once), so a request that waited for the overall rate arrives later than
    its chat's limiter accounted for and the chat's next message can arrive too soon (measured with
    aiolimiter buckets in that order: a 429 in 200 replies). :class:`Pacer` takes all at one instant.
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
        self.pacer = Pacer(overall, per_chat, chat_burst, per_group, headroom)
        self.metrics: Any = None  # core.infra.metrics.Metrics (set by the transport): replies sent, errors by code
        #: cluster mode (core.infra.shared.SharedRedis, set by the transport): the rates are the whole cluster's
        self.shared: Any = None

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
        """Let go of requests still waiting for their turn."""
        await self.pacer.close()

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
        retries = self.retries if rate_limit_args is None else max(0, rate_limit_args - 1)
        method = endpoint.lower()
        migrated = False
        attempt = 0
        while True:
            chat = data.get("chat_id")
            await self.pacer.turn(method, chat)
            if self.shared is not None:
                await self._cluster_turn(method, chat)
            failure: TelegramError
            try:
                return await self._counted(endpoint, callback, args, kwargs)
            except RetryAfter as err:
                failure = err
                wait = err._retry_after.total_seconds()  # as PTB's AIORateLimiter reads it
                if wait > self.max_wait:
                    self._give_up(endpoint, chat, attempt, err)
                    raise
                if chat is not None:  # also when giving up: the apology must not draw the next 429
                    self.pacer.pause(chat, wait)
                if attempt >= retries:
                    self._give_up(endpoint, chat, attempt, err)
                    raise
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

    async def _cluster_turn(self, method: str, chat: Any) -> None:
        """Wait for the cluster's turn too: one bot token is one set of Telegram limits for every process."""
        budgets = self.pacer.cluster_budgets(method, chat)
        if not budgets:
            return
        try:
            wait = await asyncio.to_thread(self.shared.reserve_slots, budgets)
        except RedisError as err:
            log.warning("send rates: Redis unavailable (%s), pacing this process's messages only", type(err).__name__)
            return
        if wait > 0:
            await asyncio.sleep(wait)

    async def _counted(
        self, endpoint: str, callback: Callable[..., Coroutine[Any, Any, Any]], args: Any, kwargs: Any
    ) -> Any:
        """One attempt, counted in the metrics: a message sent or edited, or a Bot API error by code."""
        try:
            result = await callback(*args, **kwargs)
        except TelegramError as err:
            if self.metrics is not None:
                self.metrics.telegram_error(error_code(err))
            raise
        if self.metrics is not None and endpoint.lower().startswith(("send", "edit")) and endpoint != "sendChatAction":
            self.metrics.reply_sent(endpoint)
        return result

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
            await self.bot.send_chat_action(chat_id, action, rate_limit_args=2)  # one retry
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
                if kind == "too_long" or (kind == "entities" and kind in tried):  # a file has neither problem
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

        async def as_document(err: BadRequest, params: dict[str, Any]) -> tuple[int, bool]:
            log.warning("sendPhoto to chat %s refused (%s): sending as a document", chat_id, err.message)
            return await self._document(chat_id, data, filename, params["caption"], params["reply_markup"])

        send = functools.partial(self.bot.send_photo, chat_id, data)
        return await self._media("sendPhoto", chat_id, send, caption, keyboard, as_document)

    async def _document(
        self, chat_id: int, data: bytes, filename: str, caption: str | None, keyboard: InlineKeyboardMarkup | None
    ) -> tuple[int, bool]:
        """Send a file; ``(message id, caption sent)``."""
        if len(data) > DOCUMENT_MAX_BYTES:
            raise DeliveryFailed(f"sendDocument to chat {chat_id}: {len(data)} bytes, over the Bot API's 50 MB")
        send = functools.partial(self.bot.send_document, chat_id, data, filename=filename)
        return await self._media("sendDocument", chat_id, send, caption, keyboard, None)

    async def _media(
        self,
        method: str,
        chat_id: int,
        send: Callable[..., Coroutine[Any, Any, Message]],
        caption: str | None,
        keyboard: InlineKeyboardMarkup | None,
        otherwise: Callable[[BadRequest, dict[str, Any]], Coroutine[Any, Any, tuple[int, bool]]] | None,
    ) -> tuple[int, bool]:
        """A photo or a file with its caption, adapted to what Telegram refuses: a caption too long goes after
        the media, entities or buttons are dropped; any other refusal goes to ``otherwise`` (when given).
        ``(message id, caption sent)``."""
        params: dict[str, Any] = {"caption": caption, "reply_markup": keyboard}
        tried: set[str] = set()
        while True:
            try:
                sent = await send(**_plain(params))
                return sent.message_id, params["caption"] is not None
            except BadRequest as err:
                kind = refusal(err)
                if kind == "caption_too_long" and kind not in tried:
                    tried.add(kind)
                    params = {**params, "caption": None, "reply_markup": None}
                    continue
                if otherwise is not None and kind not in ("entities", "buttons"):
                    return await otherwise(err, params)
                params = self._adapted(method, chat_id, err, kind, params, tried)
            except TelegramError as err:
                raise DeliveryFailed(f"{method} to chat {chat_id}: {_why(err)}") from err


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to pass on (None values left out: PTB's defaults apply)."""
    return {k: v for k, v in params.items() if v is not None}
