"""Logs as JSON lines (``logging.format: json``), and what each log line is about.

Where an update is handled, the code marks it with :func:`log_context` (the intake: its ``update_id`` and
chat; the router: the chat, then the plugin and command it runs), in a :mod:`contextvars` variable: every log
line written while that update is handled — in its task, in the tasks it starts, and in the executor threads
``services.run_blocking`` / ``run_cpu`` / ``run_db`` run its work in (they carry the context along) — knows it.

:class:`JsonFormatter` writes one JSON object per line: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message``, then ``update_id``, ``chat``, ``plugin``, ``command`` when known, and
``exception`` / ``stack`` when the record has them. It formats records after the handler's
:class:`core.infra.redact.RedactingFilter` rewrote them, so a JSON line masks exactly what a text line masks; only
ids and plugin names are added, never a text, a name or a token.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The update being handled in this context: ``update_id``, ``chat``, ``plugin``, ``command`` (those known).
_NOTHING: Mapping[str, Any] = MappingProxyType({})
_handling: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("aipbot_handling", default=_NOTHING)

#: The fields a JSON line takes from the context, in this order.
FIELDS = ("update_id", "chat", "plugin", "command")


def _plain(value: Any) -> Any:
    """An id as a number when it is one (a chat key ``"-100123"`` → ``-100123``), else as it is."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def current() -> dict[str, Any]:
    """What is known of the update being handled here (empty outside of one)."""
    return dict(_handling.get())


def log_context(fields: Callable[..., Mapping[str, Any]]) -> Callable[[F], F]:
    """Decorate an ``async`` function that handles (part of) an update: ``fields(*args, **kwargs)`` says which
    ``update_id`` / ``chat`` / ``plugin`` / ``command`` it is about (None values are left out); they are added
    to what the caller's context knew, for the duration of the call."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                known = {k: _plain(v) for k, v in fields(*args, **kwargs).items() if v is not None and k in FIELDS}
            except Exception:  # a shape the extractor did not expect must never stop the handling
                known = {}
            token = _handling.set({**_handling.get(), **known})
            try:
                return await fn(*args, **kwargs)
            finally:
                _handling.reset(token)

        return wrapper  # type: ignore[return-value]

    return decorate


def carried(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` to be run in another thread with the caller's context (so its log lines know the update)."""
    return functools.partial(contextvars.copy_context().run, fn)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = getattr(record, "aipbot", None)
        if context is None:  # formatted in the thread that logged (a StreamHandler): read the context now
            context = _handling.get()
        entry.update((k, context[k]) for k in FIELDS if k in context)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # the redacting filter has already masked it
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class ContextFilter(logging.Filter):
    """Keep the context of the thread that logged on the record (``record.aipbot``), for handlers that format
    later or elsewhere; :class:`JsonFormatter` reads it from there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "aipbot"):
            record.aipbot = _handling.get()
        return True


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``logging.format``: ``text`` (the plain lines) or ``json``."""
    if kind == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
