"""Keep secrets out of logs.

Two defences, both applied by :class:`RedactingFilter` to every log record (message, arguments and
exception text):

- by shape: ``access_token=…``, ``client_secret=…``, ``secret=…``, ``sign=…``, ``ticket=…`` and the
  like in URLs, query strings, form bodies and JSON; Telegram bot tokens (``123456:AA…``); and
  18-character ID numbers standing alone;
- by value: every secret the bot was configured with is registered at start-up
  (:func:`register_secret`) and replaced wherever it appears.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"

_SECRET_NAMES = (
    r"access_token|client_secret|client_id|secret|secret_key|api_key|sign|signature|newSignature|newSign"
    r"|ticket|nonce|token|verify_token|id_no|idNo|id_card_number|idcard_number"
)
# key=value (query strings, form bodies) and "key": "value" (JSON)
_KV = re.compile(rf"(?i)\b({_SECRET_NAMES})=([^&\s'\"]+)")
_JSON = re.compile(rf"(?i)(\"(?:{_SECRET_NAMES})\"\s*:\s*\")([^\"]*)(\")")
_BOT_TOKEN = re.compile(r"\b(bot)?\d{6,12}:[A-Za-z0-9_-]{30,}")
# an 18-character PRC resident ID number (17 digits and a check character) standing alone
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")

MAX_VALUES = 512  # the most recent secret values kept (tokens and tickets renew; single-use values pile up)

_lock = threading.Lock()
_values: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears in a log record from now on (values under 4 chars are ignored).

    The registry keeps the :data:`MAX_VALUES` most recent values; values also caught by shape (tokens,
    tickets, signatures in ``key=value`` form) stay masked after they are forgotten.
    """
    global _pattern
    if not value or len(value) < 4:
        return
    with _lock:
        if value in _values:
            return
        _values[value] = None
        while len(_values) > MAX_VALUES:
            del _values[next(iter(_values))]
        _pattern = None


def _values_pattern() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _values:
            _pattern = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len, reverse=True)))
        return _pattern


def redact(text: str) -> str:
    """``text`` with every known secret value and every secret-shaped field masked."""
    pattern = _values_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _KV.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _JSON.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _ID_NUMBER.sub(MASK, text)
    return _BOT_TOKEN.sub(lambda m: f"{m.group(1) or ''}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record so that no secret survives formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
