"""The sender: what the bot sends reaches Telegram, or the log says why it did not.

:class:`Sender` sends one :class:`core.contract.chat.Reply` (and edits, deletes, chat actions) through a PTB bot
whose rate limiter is :class:`core.sending.pacer.SendLimiter` (which paces every request and rides 429s). The
sender owns the rest:

- **retries** of transient failures (:func:`core.sending.rules.is_transient`: network errors, timeouts, 5xx
  answers) after a bounded exponential backoff with jitter, and a group that became a supergroup is sent to at
  its new chat id. :meth:`Sender.retrying` is that policy for any Bot API call — the transport's photo
  download uses it too (``paced=False``: a download does not pass the rate limiter, so a 429 there is waited
  out here);
- **adaptation** beforehand of what Telegram would refuse (texts over 4096 UTF-16 code units are split or sent as
  ``text.txt``, captions over 1024 go as a separate message, photos over 10 MB, over 10,000 px in width +
  height or with a side ratio over 20 go as a document), and after a ``400 Bad Request`` where it can
  ("message is too long" → as ``text.txt``; "can't parse entities" → as plain text; bad buttons → without
  them; a photo refused → as a document; an edit of a message that is gone → sent anew; "message is not
  modified" → nothing to do). The rules are :mod:`core.sending.rules`'.

When retries are exhausted, or a 400 cannot be adapted, :class:`DeliveryFailed` is raised: a
:class:`core.contract.errors.UserFacingError`, so the router logs the reason and apologises to the user (that
apology rides the same retries). Nothing here logs a URL: the bot token is part of every Bot API URL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message
from telegram.error import BadRequest, ChatMigrated, RetryAfter, TelegramError

from core.contract.chat import Button, Reply
from core.contract.errors import UserFacingError
from core.sending.rules import (
    CAPTION_LIMIT,
    DOCUMENT_MAX_BYTES,
    MAX_SPLIT,
    error_code,
    is_transient,
    markup,
    photo_problem,
    refusal,
    retry_after,
    split_text,
    truncate,
    utf16_len,
    why,
)

if TYPE_CHECKING:
    from core.infra.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class _QuietUnparsedAnswers(logging.Filter):
    """PTB logs an HTML error page it could not parse (nginx's 502) at ERROR with a traceback, then raises
    the NetworkError that :class:`Sender` retries and logs itself: keep it, at INFO, one line."""

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


class Sender:
    """Sends :class:`Reply` objects (and edits, deletes, chat actions) through a PTB bot that has a
    :class:`core.sending.pacer.SendLimiter`; ``run_cpu`` runs the photo checks off the event loop.

    ``retries``: retries of a transient failure (``backoff`` seconds before the first, doubling); ``max_wait``:
    the longest ``retry_after`` waited out for a call that does not pass the rate limiter; ``metrics`` counts
    the errors of those calls (the limiter counts the others).
    """

    def __init__(
        self,
        bot: Bot,
        run_cpu: Callable[..., Coroutine[Any, Any, Any]],
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.bot = bot
        self.run_cpu = run_cpu
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.metrics = metrics

    @classmethod
    def from_config(
        cls,
        bot: Bot,
        run_cpu: Callable[..., Coroutine[Any, Any, Any]],
        telegram: dict[str, Any],
        *,
        metrics: Metrics | None = None,
    ) -> Sender:
        """The sender the ``telegram:`` config section describes."""
        return cls(
            bot,
            run_cpu,
            retries=telegram["send_retries"],
            backoff=telegram["send_backoff"],
            max_wait=telegram["send_max_wait"],
            metrics=metrics,
        )

    # ------------------------------------------------------------------ retries
    async def retrying(
        self,
        what: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        chat: Any = None,
        attempts: int | None = None,
        paced: bool = True,
    ) -> T:
        """``call(chat)`` until it succeeds or fails for good; raises its last error.

        Retried: a network error, a timeout or a 5xx answer (after ``backoff · 2ⁿ`` seconds, jittered), at most
        ``retries`` times (``attempts``: that many calls in all instead); a ``ChatMigrated`` once, at the new
        chat id. A 429 is the rate limiter's to ride when the call passes it (``paced``); otherwise it is waited
        out here like the Bot API asked (never over ``max_wait``), within the same retries. ``what`` names the
        call in the log.
        """
        retries = self.retries if attempts is None else max(0, attempts - 1)
        attempt, migrated = 0, False
        while True:
            try:
                return await call(chat)
            except ChatMigrated as err:  # a group became a supergroup: same request, new chat id
                if migrated or chat is None:
                    raise
                log.info("%s: chat %s is now %s; sending there", what, chat, err.new_chat_id)
                chat, migrated = err.new_chat_id, True
                continue
            except TelegramError as err:
                if not paced and self.metrics is not None:
                    self.metrics.telegram_error(error_code(err))
                if isinstance(err, RetryAfter):
                    if paced:
                        raise  # the limiter rode it already, and gave up
                    wait = retry_after(err)
                elif is_transient(err):  # jittered: no herd of retries when Telegram is back
                    wait = self.backoff * 2**attempt * random.uniform(1.0, 1.25)
                else:
                    raise  # a refusal: the same request fails again (the caller may adapt it)
                if attempt >= retries or (isinstance(err, RetryAfter) and wait > self.max_wait):
                    log.warning("%s failed after %d attempts: %s", _where(what, chat), attempt + 1, why(err))
                    raise
                failure = err
            attempt += 1
            log.info(
                "%s failed (%s); retry %d of %d in %.1f s", _where(what, chat), why(failure), attempt, retries, wait
            )
            await asyncio.sleep(wait)

    async def _bot(self, what: str, method: Callable[..., Awaitable[T]], chat_id: int, *args: Any, **kwargs: Any) -> T:
        """``method(chat_id, *args, **kwargs)`` (a bot method) with :meth:`retrying`."""
        return await self.retrying(what, lambda chat: method(chat, *args, **kwargs), chat=chat_id)

    # ------------------------------------------------------------------ what the transport calls
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
                edit = functools.partial(self.bot.edit_message_text, head, message_id=message_id, **_plain(params))
                await self.retrying("editMessageText", lambda chat, edit=edit: edit(chat_id=chat), chat=chat_id)
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
                raise DeliveryFailed(f"editMessageText to chat {chat_id}: {why(err)}") from err
        if rest:
            await self.send(chat_id, Reply(rest, buttons))

    async def delete(self, chat_id: int, message_id: int) -> bool:
        """Delete a message; False when Telegram would not (not allowed, gone, or still failing)."""
        try:
            return bool(await self._bot("deleteMessage", self.bot.delete_message, chat_id, message_id))
        except TelegramError as err:
            log.info("could not delete message %s in chat %s: %s", message_id, chat_id, why(err))
            return False

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        """Show "typing…" (or another action); never raises: it only decorates the wait (one retry)."""
        try:
            await self.retrying(
                "sendChatAction",
                lambda chat: self.bot.send_chat_action(chat, action, rate_limit_args=2),  # one 429 ridden
                chat=chat_id,
                attempts=2,  # one retry
            )
        except TelegramError as err:
            log.info("sendChatAction to chat %s failed: %s", chat_id, why(err))

    # ------------------------------------------------------------------ the pieces
    def _adapted(
        self, method: str, chat_id: int, err: BadRequest, kind: str, params: dict[str, Any], tried: set[str]
    ) -> dict[str, Any]:
        """``params`` changed so that the 400 ``err`` (of ``kind``) should not recur; DeliveryFailed if none does."""
        useless = kind == "buttons" and not params.get("reply_markup")
        if kind in tried or kind not in ("entities", "buttons") or useless:
            raise DeliveryFailed(f"{method} to chat {chat_id} refused: {why(err)}") from err
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
                sent: Message = await self._bot("sendMessage", self.bot.send_message, chat_id, text, **_plain(params))
                return sent.message_id
            except BadRequest as err:
                kind = refusal(err)
                if kind == "too_long" or (kind == "entities" and kind in tried):  # a file has neither problem
                    log.warning("sendMessage to chat %s refused (%s): sending as text.txt", chat_id, err.message)
                    return await self._text_file(chat_id, text, params["reply_markup"])
                params = self._adapted("sendMessage", chat_id, err, kind, params, tried)
            except TelegramError as err:
                raise DeliveryFailed(f"sendMessage to chat {chat_id}: {why(err)}") from err

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

        send = functools.partial(self._bot, "sendPhoto", self.bot.send_photo, chat_id, data)
        return await self._media("sendPhoto", chat_id, send, caption, keyboard, as_document)

    async def _document(
        self, chat_id: int, data: bytes, filename: str, caption: str | None, keyboard: InlineKeyboardMarkup | None
    ) -> tuple[int, bool]:
        """Send a file; ``(message id, caption sent)``."""
        if len(data) > DOCUMENT_MAX_BYTES:
            raise DeliveryFailed(f"sendDocument to chat {chat_id}: {len(data)} bytes, over the Bot API's 50 MB")
        send = functools.partial(self._bot, "sendDocument", self.bot.send_document, chat_id, data, filename=filename)
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
                raise DeliveryFailed(f"{method} to chat {chat_id}: {why(err)}") from err


def _where(what: str, chat: Any) -> str:
    return what if chat is None else f"{what} to chat {chat}"


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to pass on (None values left out: PTB's defaults apply)."""
    return {k: v for k, v in params.items() if v is not None}
