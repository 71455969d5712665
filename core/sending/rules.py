"""Telegram's limits and what to do about them: pure functions, no I/O, no state.

- **Texts**: Telegram counts UTF-16 code units (an emoji outside the BMP counts 2): a message holds
  :data:`TEXT_LIMIT` (4096), a caption :data:`CAPTION_LIMIT` (1024). :func:`split_text` cuts a long text at line
  breaks; a text that would take more than :data:`MAX_SPLIT` messages goes as ``text.txt`` instead.
- **Photos**: :func:`photo_problem` says why ``sendPhoto`` would refuse an image (over 10 MB, over 10,000 px in
  width + height, a side ratio over 20): such a photo goes as a document.
- **Refusals**: :func:`refusal` names the kind of a ``400 Bad Request`` (the sender adapts: as plain text,
  without the buttons, as ``text.txt``, as a document, sent anew for an edit of a message that is gone);
  :func:`is_transient` says whether the very same request may work when retried (5xx, network errors,
  timeouts); :func:`error_code` is the code a failure is counted under.
- **Rates**: which methods count against which of Telegram's send limits (:data:`MESSAGE_METHODS`,
  :data:`EDIT_METHODS`, :func:`is_group`); the buckets themselves are :mod:`core.sending.pacer`'s.
"""

from __future__ import annotations

import io
import re
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut

from core.contract.chat import Button
from core.infra.redact import redact

MAX_SPLIT = 3  # a text that takes more messages than this is sent as a .txt file
TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096, counted in UTF-16 code units
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)  # 1024
PHOTO_MAX_BYTES = 10 * 1024 * 1024  # sendPhoto: "The photo must be at most 10 MB in size"
PHOTO_MAX_SIDES = 10_000  # "The photo's width and height must not exceed 10000 in total"
PHOTO_MAX_RATIO = 20  # "Width and height ratio must be at most 20"
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # files the Bot API accepts for upload
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


def is_group(chat: Any) -> bool:
    """Whether a ``chat_id`` is a group's (negative ids, ``@channel`` names): those also have a per-minute limit."""
    return isinstance(chat, str) or (isinstance(chat, int) and chat < 0)


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


def retry_after(err: RetryAfter) -> float:
    """The seconds a 429 asks to wait (read as PTB's ``AIORateLimiter`` reads it, whatever PTB_TIMEDELTA says)."""
    return err._retry_after.total_seconds()


def error_code(err: TelegramError) -> int | str:
    """The code a failed Bot API call is counted under: 400, 403, 429, a 5xx, or the kind of failure."""
    for kind, code in ((RetryAfter, 429), (ChatMigrated, 400), (BadRequest, 400), (Forbidden, 403)):
        if isinstance(err, kind):
            return code
    if isinstance(err, TimedOut):
        return "timeout"
    status = re.search(r"\((\d{3})\)", str(err))
    return int(status.group(1)) if status else ("network" if isinstance(err, NetworkError) else "other")


def why(err: BaseException) -> str:
    """The error in one short line for the log: its type and message (no HTML page, no secret)."""
    text = str(err).split(". Parsing the server response", 1)[0]
    return redact(f"{type(err).__name__}: {text}")[:300]
