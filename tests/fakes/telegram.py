"""A fake Telegram Bot API server for end-to-end tests.

:class:`FakeTelegram` is a real HTTP server on ``127.0.0.1`` (port chosen by the OS) that answers the Bot API
methods aipbot uses the way ``api.telegram.org`` does, so the real python-telegram-bot stack (``Bot``,
``Application``, its ``Updater`` long-polling ``getUpdates``) can be pointed at it with ``base_url`` /
``base_file_url`` and driven by a test with no network::

    async def test_echo(fake_telegram):
        app = fake_telegram.app_builder().build()
        app.add_handler(MessageHandler(filters.TEXT, echo))
        async with fake_telegram.polling(app):
            fake_telegram.user_sends_text("hello")
            reply = await fake_telegram.bot_replied()
            assert reply.text == "hello"

What it checks like Telegram does (each a ``400 Bad Request`` that PTB raises as ``telegram.error.BadRequest``):
empty or too long texts and captions, HTML / MarkdownV2 that Telegram could not parse, callback data over 64 bytes,
invalid bot commands, replies to unknown messages, edits that change nothing, deleting a message that is gone or
when :attr:`FakeTelegram.can_delete` is false, ``getFile`` of unknown or over-20-MB files, unknown or twice-answered
callback queries. A wrong token answers ``401 Unauthorized`` (PTB: ``InvalidToken``), an unknown method ``404``.

How PTB talks (``telegram.request.HTTPXRequest``): every call is a POST whose parameters are form fields,
urlencoded, or ``multipart/form-data`` as soon as a file is attached; string values are sent as they are, every
other value (ints, bools, ``reply_markup``, ``reply_parameters``, ``commands``, ``scope``...) JSON-encoded as a
string. The server decodes JSON, urlencoded and multipart bodies and query strings alike (:func:`decode_params`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

try:  # Pillow is optional: it gives photos their real width/height and a real thumbnail.
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow is installed in the dev venv
    Image = None  # type: ignore[assignment]

__all__ = ["Call", "FakeTelegram", "decode_params", "fake_telegram"]

JSONDict = dict[str, Any]

#: Parameters whose value is a plain string even when it looks like a number or JSON ("123", "true").
STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "file_id",
        "language_code",
        "action",
        "url",
        "title",
        "description",
        "short_description",
        "name",
        "emoji",
        "business_connection_id",
        "message_effect_id",
        "inline_message_id",
        "secret_token",
        "inline_query_id",
        "question",
        "address",
    }
)
#: Telegram's limits (https://core.telegram.org/bots/api).
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_GETFILE_SIZE = 20 * 1024 * 1024
#: Tags Telegram accepts in ``parse_mode=HTML``.
HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji", "code", "pre"}
    | {"blockquote"}
)
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_BOT_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")


class ApiError(Exception):
    """An error answer of the Bot API: ``{"ok": false, "error_code": status, "description": description}``."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def bad_request(reason: str) -> ApiError:
    """A ``400 Bad Request: <reason>`` error, worded like Telegram's."""
    return ApiError(400, f"Bad Request: {reason}")


@dataclass
class Call:
    """One Bot API request the bot made, as the server understood it.

    Attributes:
        method: The method name as the bot spelled it (``"sendMessage"``).
        params: The decoded parameters (ints, bools, dicts and lists already JSON-decoded).
        files: Uploaded files by multipart field name: ``{"document": ("report.pdf", b"...")}``.
        result: The ``result`` answered (e.g. the sent Message dict), ``None`` when the call failed.
        error: The error description answered (``"Bad Request: message can't be deleted"``), else ``None``.
    """

    method: str
    params: JSONDict
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the server answered ``ok: true``."""
        return self.error is None

    @property
    def chat_id(self) -> int | str | None:
        """The ``chat_id`` parameter, if any."""
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        """The ``text`` parameter, else the ``caption``."""
        text = self.params.get("text")
        return text if text is not None else self.params.get("caption")

    @property
    def reply_markup(self) -> JSONDict | None:
        """The ``reply_markup`` parameter as a dict."""
        markup = self.params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        return markup

    @property
    def buttons(self) -> list[list[JSONDict]]:
        """The inline keyboard as rows of button dicts (``{"text": ..., "callback_data": ...}``); ``[]`` if none."""
        markup = self.reply_markup or {}
        return [list(row) for row in markup.get("inline_keyboard", [])]

    @property
    def callback_data(self) -> list[str]:
        """The ``callback_data`` of every inline button, row by row."""
        return [b["callback_data"] for row in self.buttons for b in row if "callback_data" in b]

    @property
    def file(self) -> tuple[str, bytes] | None:
        """The first uploaded file as ``(filename, bytes)``, if any."""
        return next(iter(self.files.values()), None)

    def __str__(self) -> str:
        """A short one-line description for failure messages."""
        bits = [self.method]
        if self.chat_id is not None:
            bits.append(f"chat_id={self.chat_id}")
        if self.text is not None:
            text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
            bits.append(f"text={text!r}")
        if self.files:
            bits.append("files=" + ",".join(f"{k}:{name}({len(data)} B)" for k, (name, data) in self.files.items()))
        if self.error:
            bits.append(f"error={self.error!r}")
        return " ".join(bits)


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_size: int


# --------------------------------------------------------------------------------------------------------------------
# Request decoding


def _decode_value(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in STRING_PARAMS:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, dict | list | bool | int | float) else value


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Split a ``multipart/form-data`` body into its plain fields and its files (``{field: (filename, bytes)}``)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise bad_request("multipart body without boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = head.decode("utf-8", "replace")
        disposition = next((h for h in headers.split("\r\n") if h.lower().startswith("content-disposition")), "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if not name:
            continue
        filename = re.search(r"\bfilename\*=(?:UTF-8'')?([^;]+)", disposition, re.I)
        if filename:
            files[name.group(1)] = (unquote(filename.group(1).strip('"')), content)
        elif (filename := re.search(r'\bfilename="([^"]*)"', disposition)) is not None:
            files[name.group(1)] = (filename.group(1), content)
        else:
            fields[name.group(1)] = content.decode("utf-8")
    return fields, files


def decode_params(body: bytes, content_type: str, query: str = "") -> tuple[JSONDict, dict[str, tuple[str, bytes]]]:
    """Decode a Bot API request's parameters from its query string and JSON / urlencoded / multipart body.

    Form values are JSON-decoded (PTB JSON-encodes every non-string value) except :data:`STRING_PARAMS`.
    """
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    files: dict[str, tuple[str, bytes]] = {}
    ctype = content_type.split(";")[0].strip().lower()
    if body and ctype == "application/json":
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise bad_request("JSON body is not an object")
        return {**{k: _decode_value(k, v) for k, v in raw.items()}, **payload}, files
    if ctype == "multipart/form-data":
        fields, files = parse_multipart(body, content_type)
        raw.update(fields)
    elif body:
        raw.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return {k: _decode_value(k, v) for k, v in raw.items()}, files


# --------------------------------------------------------------------------------------------------------------------
# Formatting checks, the way Telegram rejects messages it cannot parse


def check_html(text: str) -> None:
    """Raise the ``can't parse entities`` error Telegram gives for invalid ``parse_mode=HTML`` text."""
    stack: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "<":
            match = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*>").match(text, pos)
            if not match:
                raise bad_request(f"can't parse entities: Unexpected end of name token at byte offset {pos}")
            closing, tag = match.group(1), match.group(2).lower()
            if tag not in HTML_TAGS:
                kind = "end" if closing else "start"
                raise bad_request(f'can\'t parse entities: Unsupported {kind} tag "{tag}" at byte offset {pos}')
            if closing:
                if not stack or stack[-1] != tag:
                    raise bad_request(
                        f'can\'t parse entities: Unmatched end tag at byte offset {pos}, expected "</{stack[-1]}>", '
                        f'found "</{tag}>"'
                        if stack
                        else f'can\'t parse entities: Unexpected end tag at byte offset {pos}: "</{tag}>"'
                    )
                stack.pop()
            else:
                stack.append(tag)
            pos = match.end()
        elif char == "&":
            match = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);").match(text, pos)
            if not match or (match.group(1)[0] != "#" and match.group(1) not in ("lt", "gt", "amp", "quot")):
                raise bad_request(
                    f"can't parse entities: Character entity expected at byte offset {pos}"
                    if not match
                    else f"can't parse entities: Unsupported HTML entity at byte offset {pos}"
                )
            pos = match.end()
        else:  # a bare ">" is tolerated by Telegram in practice
            pos += 1
    if stack:
        raise bad_request(f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\"")


def check_markdown_v2(text: str) -> None:
    """Raise the error Telegram gives for a ``parse_mode=MarkdownV2`` text with an unescaped reserved character.

    A best-effort check: code spans/blocks and link URLs are skipped; ``# + - = | { } . ! ( )`` and a ``>`` that does
    not start a line (quote) must be escaped elsewhere. Unpaired ``_ * [ ] ~`` are not checked.
    """
    stripped = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.S)
    stripped = re.sub(r"\]\((?:\\.|[^)\\])*\)", "]", stripped)
    pos = 0
    while pos < len(stripped):
        char = stripped[pos]
        if char == "\\":
            pos += 2
            continue
        reserved = char in "#+-={}.!()" or (char == "|" and stripped[pos : pos + 2] != "||")
        if reserved or (char == ">" and pos > 0 and stripped[pos - 1] != "\n"):
            raise bad_request(
                f"can't parse entities: Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        if char == "|":
            pos += 2
            continue
        pos += 1


def check_formatting(text: str, parse_mode: str | None) -> None:
    """Check *text* against *parse_mode* (HTML and MarkdownV2; legacy Markdown is not checked)."""
    if not parse_mode:
        return
    if parse_mode.lower() == "html":
        check_html(text)
    elif parse_mode.lower() == "markdownv2":
        check_markdown_v2(text)


def _image_size(data: bytes) -> tuple[int, int] | None:
    if Image is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # not an image Pillow knows
        return None


def _thumbnail(data: bytes, max_side: int) -> tuple[bytes, int, int] | None:
    if Image is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, "JPEG", quality=80)
            return out.getvalue(), image.width, image.height
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------------------------
# The server


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/bot<token>/<method>`` and ``/file/bot<token>/<path>`` to the owning :class:`FakeTelegram`."""

    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # idle keep-alive connections end after this

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Bot API methods accept GET with a query string; file downloads are GETs."""
        self._dispatch()

    def do_POST(self) -> None:
        """Bot API methods by POST (JSON, urlencoded or multipart)."""
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        body = self._read_body()
        path = url.path
        if path.startswith("/file/bot"):
            token, _, file_path = path[len("/file/bot") :].partition("/")
            # PTB's File.download quotes the URL path: the token's ':' arrives as %3A
            status, data, ctype = fake._download(unquote(token), unquote(file_path))
            self._send(status, data, ctype)
            return
        if not path.startswith("/bot"):
            self._send(404, _error_body(404, "Not Found"))
            return
        token, _, method = path[len("/bot") :].partition("/")
        status, answer = fake._handle(unquote(token), method, body, self.headers.get("Content-Type", ""), url.query)
        self._send(status, json.dumps(answer).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeTelegram

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (a cancelled long poll) are normal; other errors are printed."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class FakeTelegram:
    """A fake Telegram Bot API server on ``127.0.0.1``; see the module docstring.

    Attributes:
        TOKEN: The only token the server accepts.
        bot_username: The bot's username, as ``getMe`` answers it.
        bot_id: The bot's user id (the part of :attr:`TOKEN` before the colon).
        base_url: Pass to ``Bot(base_url=...)`` / ``ApplicationBuilder().base_url(...)`` (PTB appends the token).
        base_file_url: Pass as ``base_file_url`` (PTB appends the token).
        calls: Every Bot API call, in order (including ``getUpdates``).
        commands: What ``setMyCommands`` stored for the default scope, by ``language_code`` (``""`` for none).
        scoped_commands: Every ``setMyCommands``, by ``(scope key, language_code)``; scope keys are ``"default"``,
            ``"all_private_chats"``..., ``"chat:<chat_id>"``, ``"chat_member:<chat_id>:<user_id>"``.
        messages: Every message (the users' and the bot's) by chat id, in order, as currently stored (edits applied,
            deleted ones removed).
        deleted: ``(chat_id, message_id)`` of every message the bot deleted.
        can_delete: When false, ``deleteMessage`` answers ``Bad Request: message can't be deleted``.
        long_poll_cap: The longest a ``getUpdates`` waits for an update, whatever ``timeout`` the bot asked.
        webhook_deleted: How many times the bot called ``deleteWebhook``.
    """

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
        self.commands: dict[str, list[JSONDict]] = {}
        self.scoped_commands: dict[tuple[str, str], list[JSONDict]] = {}
        self.messages: dict[int, list[JSONDict]] = {}
        self.deleted: list[tuple[int, int]] = []
        self.webhook_deleted: int = 0
        self._cond = threading.Condition()
        self._updates: list[JSONDict] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_counter = itertools.count(1)
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._media_groups = itertools.count(13_000_000_000_000_001)
        self._consumed: set[int] = set()
        self._chats: dict[int, JSONDict] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.port: int = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/bot``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """``http://127.0.0.1:<port>/file/bot``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

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
        """Listen on ``127.0.0.1`` (a free port) in a background thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="FakeTelegram", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes pending long polls, closes the socket, joins the thread."""
        if self._server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- PTB conveniences --------------------------------------------------------------------------------------------

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
            try:
                await app.updater.start_polling(poll_interval=0, timeout=timeout)
                try:
                    yield app
                finally:
                    if app.updater.running:
                        await app.updater.stop()
            finally:
                if app.running:
                    await app.stop()
        finally:
            await app.shutdown()

    # -- the users' side ---------------------------------------------------------------------------------------------

    def _user(self, user_id: int, first_name: str, username: str | None, language_code: str | None) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        return user

    def _chat(self, user: JSONDict, chat_id: int | None, chat_type: str) -> JSONDict:
        if chat_type == "private":
            chat: JSONDict = {"id": chat_id or user["id"], "type": "private", "first_name": user["first_name"]}
            if "username" in user:
                chat["username"] = user["username"]
        else:
            chat = {"id": chat_id or self.DEFAULT_GROUP_ID, "type": chat_type, "title": "aipbot test group"}
        self._chats[chat["id"]] = chat
        return chat

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _store_message(self, message: JSONDict) -> None:
        self.messages.setdefault(message["chat"]["id"], []).append(message)

    def _find_message(self, chat_id: int, message_id: int) -> JSONDict | None:
        return next((m for m in self.messages.get(chat_id, []) if m["message_id"] == message_id), None)

    def _queue(self, update: JSONDict) -> JSONDict:
        with self._cond:
            # a snapshot: later edits of stored messages must not change an update already queued
            update = copy.deepcopy({"update_id": next(self._update_ids), **update})
            self._updates.append(update)
            self._cond.notify_all()
        return update

    def _user_message(
        self,
        content: JSONDict,
        *,
        user_id: int,
        chat_id: int | None,
        chat_type: str,
        language_code: str | None,
        first_name: str,
        username: str | None,
        reply_to: JSONDict | None = None,
    ) -> JSONDict:
        with self._cond:
            user = self._user(user_id, first_name, username, language_code)
            chat = self._chat(user, chat_id, chat_type)
            message: JSONDict = {
                "message_id": self._next_message_id(chat["id"]),
                "from": user,
                "chat": chat,
                "date": int(time.time()),
                **content,
            }
            if reply_to is not None:
                message["reply_to_message"] = reply_to
            self._store_message(message)
        self._queue({"message": message})
        return message

    @staticmethod
    def _command_entities(text: str | None) -> list[JSONDict]:
        match = _BOT_COMMAND_RE.match(text or "")
        return [{"type": "bot_command", "offset": 0, "length": len(match.group(0))}] if match else []

    def _new_file(self, data: bytes, folder: str, ext: str, file_size: int | None = None, kind: str = "BQ") -> JSONDict:
        n = next(self._file_counter)
        stored = _StoredFile(
            file_id=f"{kind}ACAgIAAxkBAAI{n:06d}Zm9vYmFy{n:04d}",
            file_unique_id=f"AQAD{n:06d}",
            file_path=f"{folder}/file_{n}.{ext}",
            data=data,
            file_size=len(data) if file_size is None else file_size,
        )
        with self._cond:
            self._files[stored.file_id] = stored
            self._files_by_path[stored.file_path] = stored
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.file_size}

    def _photo_sizes(self, data: bytes) -> list[JSONDict]:
        size = _image_size(data) or (800, 600)
        sizes: list[JSONDict] = []
        for side in (90, 320):
            if max(size) <= side:
                break
            thumb = _thumbnail(data, side)
            if thumb is None:  # not an image Pillow can read: a "thumbnail" with the same bytes
                scale = side / max(size)
                thumb = data, max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
            sizes.append(
                {**self._new_file(thumb[0], "photos", "jpg", kind="Ag"), "width": thumb[1], "height": thumb[2]}
            )
        sizes.append({**self._new_file(data, "photos", "jpg", kind="Ag"), "width": size[0], "height": size[1]})
        if len(sizes) == 1:  # Telegram always sends several sizes; a tiny image gets a same-size "thumbnail"
            sizes.insert(0, {**self._new_file(data, "photos", "jpg", kind="Ag"), "width": size[0], "height": size[1]})
        return sizes

    def user_sends_text(
        self,
        text: str,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        first_name: str = "Ada",
        username: str | None = None,
        reply_to: JSONDict | None = None,
    ) -> JSONDict:
        """Queue a text message from a user; a leading ``/command`` gets its ``bot_command`` entity.

        *chat_id* defaults to the user's id in private chats and :attr:`DEFAULT_GROUP_ID` otherwise (*chat_type*
        ``"group"`` / ``"supergroup"``). *reply_to* is a message dict the user replies to. Returns the Message dict.
        """
        content: JSONDict = {"text": text}
        if entities := self._command_entities(text):
            content["entities"] = entities
        return self._user_message(
            content,
            user_id=user_id,
            chat_id=chat_id,
            chat_type=chat_type,
            language_code=language_code,
            first_name=first_name,
            username=username,
            reply_to=reply_to,
        )

    def user_sends_photo(
        self,
        data: bytes,
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        first_name: str = "Ada",
        username: str | None = None,
    ) -> JSONDict:
        """Queue a photo message; ``photo`` lists PhotoSizes smallest first, the last one being *data* itself.

        Width/height come from the image (Pillow); the smaller sizes are real JPEG thumbnails (90, 320 px).
        Returns the Message dict.
        """
        content: JSONDict = {"photo": self._photo_sizes(data)}
        if caption is not None:
            content["caption"] = caption
            if entities := self._command_entities(caption):
                content["caption_entities"] = entities
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        return self._user_message(
            content,
            user_id=user_id,
            chat_id=chat_id,
            chat_type=chat_type,
            language_code=language_code,
            first_name=first_name,
            username=username,
        )

    def user_sends_album(
        self,
        images: list[bytes],
        *,
        caption: str | None = None,
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        first_name: str = "Ada",
        username: str | None = None,
    ) -> list[JSONDict]:
        """Queue an album: one photo message per image, all with one ``media_group_id``, the caption on the first."""
        group = str(next(self._media_groups))
        return [
            self.user_sends_photo(
                data,
                caption=caption if i == 0 else None,
                media_group_id=group,
                user_id=user_id,
                chat_id=chat_id,
                chat_type=chat_type,
                language_code=language_code,
                first_name=first_name,
                username=username,
            )
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
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        first_name: str = "Ada",
        username: str | None = None,
    ) -> JSONDict:
        """Queue a document message. *file_size* overrides the reported size (e.g. claim 25 MB without sending it);
        ``getFile`` then refuses files over 20 MB like Telegram (``Bad Request: file is too big``).
        Returns the Message dict.
        """
        ext = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        document = {
            **self._new_file(data, "documents", ext, file_size=file_size),
            "file_name": file_name,
            "mime_type": mime_type,
        }
        content: JSONDict = {"document": document}
        if caption is not None:
            content["caption"] = caption
            if entities := self._command_entities(caption):
                content["caption_entities"] = entities
        return self._user_message(
            content,
            user_id=user_id,
            chat_id=chat_id,
            chat_type=chat_type,
            language_code=language_code,
            first_name=first_name,
            username=username,
        )

    def user_presses_button(
        self,
        message: JSONDict | Call,
        callback_data: str,
        *,
        user_id: int = 1001,
        language_code: str | None = "en",
        first_name: str = "Ada",
        username: str | None = None,
        strict: bool = True,
    ) -> JSONDict:
        """Queue a ``callback_query`` update: the user pressed the button with *callback_data* on a bot *message*
        (a Message dict, or the :class:`Call` that sent it). With *strict*, the message's current inline keyboard
        (edits applied) must have such a button. Returns the CallbackQuery dict (its ``id`` is what
        ``answerCallbackQuery`` must answer).
        """
        if isinstance(message, Call):
            if not isinstance(message.result, dict):
                raise AssertionError(f"{message} did not send a message")
            message = message.result
        with self._cond:
            current = self._find_message(message["chat"]["id"], message["message_id"]) or message
            if strict:
                rows = (current.get("reply_markup") or {}).get("inline_keyboard", [])
                data = [b.get("callback_data") for row in rows for b in row]
                if callback_data not in data:
                    raise AssertionError(f"message {current['message_id']} has no button {callback_data!r}: {data}")
            query_id = str(4_000_000_000_000_000 + next(self._callback_ids))
            self._open_callbacks.add(query_id)
        query = {
            "id": query_id,
            "from": self._user(user_id, first_name, username, language_code),
            "message": current,
            "chat_instance": str(-7_000_000_000_000_000 - abs(current["chat"]["id"])),
            "data": callback_data,
        }
        self._queue({"callback_query": query})
        return query

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates queued and not yet confirmed by a ``getUpdates`` offset."""
        with self._cond:
            return list(self._updates)

    # -- the bot's side, for assertions ------------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        """Every call of *method* (case-insensitive), in order."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    async def _wait_call(self, matches: Callable[[Call], bool], timeout: float, what: str) -> Call:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._cond:
                for index, call in enumerate(self.calls):
                    if index not in self._consumed and matches(call):
                        self._consumed.add(index)
                        return call
            if loop.time() >= deadline:
                seen = [str(c) for c in self.calls if c.method != "getUpdates"]
                raise AssertionError(f"no {what} within {timeout} s; calls seen: {seen or 'none'}")
            await asyncio.sleep(0.005)

    async def bot_replied(
        self,
        chat_id: int | None = None,
        *,
        methods: Iterable[str] = ("sendMessage", "sendDocument", "sendPhoto"),
        timeout: float = 10,
    ) -> Call:
        """The next call of one of *methods* (to *chat_id* if given) not yet returned by ``bot_replied`` /
        ``wait_for``. Waits up to *timeout* seconds; raises AssertionError listing the calls seen otherwise.
        """
        wanted = {m.lower() for m in methods}

        def matches(call: Call) -> bool:
            return call.method.lower() in wanted and (chat_id is None or _same(call.chat_id, chat_id))

        return await self._wait_call(matches, timeout, f"{'/'.join(methods)} to chat {chat_id or 'any'}")

    async def wait_for(self, method: str, *, timeout: float = 10, **match: Any) -> Call:
        """The next not yet consumed call of *method* whose params equal *match* (``text=`` also matches a
        caption; a callable value is a predicate on the param). Raises AssertionError after *timeout* seconds.
        """

        def matches(call: Call) -> bool:
            if call.method.lower() != method.lower():
                return False
            for key, expected in match.items():
                actual = call.text if key == "text" else call.params.get(key)
                if callable(expected):
                    if not expected(actual):
                        return False
                elif not _same(actual, expected):
                    return False
            return True

        return await self._wait_call(matches, timeout, f"{method} {match or ''}".strip())

    # -- request handling (server threads) ---------------------------------------------------------------------------

    def _handle(self, token: str, method: str, body: bytes, content_type: str, query: str) -> tuple[int, JSONDict]:
        if token != self.TOKEN:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        try:
            params, files = decode_params(body, content_type, query)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
        except ApiError as exc:
            return exc.status, {"ok": False, "error_code": exc.status, "description": exc.description}
        call = Call(method=method, params=params, files=files)
        handler = getattr(self, f"_api_{method.lower()}", None)
        if handler is None:
            call.error = "Not Found"
            self._record(call)
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            if method.lower() == "getupdates":  # waits on the condition itself
                result = handler(params, files)
            else:
                with self._cond:
                    result = handler(params, files)
        except ApiError as exc:
            call.error = exc.description
            self._record(call)
            return exc.status, {"ok": False, "error_code": exc.status, "description": exc.description}
        except (KeyError, TypeError, ValueError) as exc:
            call.error = f"Bad Request: {exc!r}"
            self._record(call)
            return 400, {"ok": False, "error_code": 400, "description": call.error}
        call.result = result
        self._record(call)
        return 200, {"ok": True, "result": result}

    def _record(self, call: Call) -> None:
        with self._cond:
            self.calls.append(call)

    def _download(self, token: str, file_path: str) -> tuple[int, bytes, str]:
        if token != self.TOKEN:
            return 401, _error_body(401, "Unauthorized"), "application/json"
        with self._cond:
            stored = self._files_by_path.get(file_path)
        if stored is None:
            return 404, _error_body(404, "Not Found"), "application/json"
        return 200, stored.data, "application/octet-stream"

    # Each _api_<lowercased method> takes (params, files) and returns the result or raises ApiError.
    # All but getUpdates run holding self._cond.

    def _api_getme(self, params: JSONDict, files: dict) -> JSONDict:
        return self.bot_user

    def _api_deletewebhook(self, params: JSONDict, files: dict) -> bool:
        self.webhook_deleted += 1
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _api_getwebhookinfo(self, params: JSONDict, files: dict) -> JSONDict:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    def _api_close(self, params: JSONDict, files: dict) -> bool:
        return True

    def _api_logout(self, params: JSONDict, files: dict) -> bool:
        return True

    def _api_getupdates(self, params: JSONDict, files: dict) -> list[JSONDict]:
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        wait = min(float(params.get("timeout") or 0), self.long_poll_cap)
        deadline = time.monotonic() + wait
        with self._cond:
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            elif offset < 0:
                self._updates = self._updates[offset:]
            while not self._updates and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._updates[:limit])

    def _api_setmycommands(self, params: JSONDict, files: dict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("commands must be a list of at most 100 BotCommand")
        for command in commands:
            if not _COMMAND_RE.match(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("command description must be 1-256 characters")
        key = (_scope_key(params.get("scope")), params.get("language_code") or "")
        self.scoped_commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        if key[0] == "default":
            self.commands[key[1]] = self.scoped_commands[key]
        return True

    def _api_getmycommands(self, params: JSONDict, files: dict) -> list[JSONDict]:
        key = (_scope_key(params.get("scope")), params.get("language_code") or "")
        return list(self.scoped_commands.get(key, []))

    def _api_deletemycommands(self, params: JSONDict, files: dict) -> bool:
        key = (_scope_key(params.get("scope")), params.get("language_code") or "")
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
        chat = self._chats.get(chat_id) or {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        message: JSONDict = {
            "message_id": self._next_message_id(chat_id),
            "from": self.bot_user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        reply = params.get("reply_parameters") or (
            {"message_id": params["reply_to_message_id"]} if params.get("reply_to_message_id") else None
        )
        if reply:
            target = self._find_message(int(reply.get("chat_id") or chat_id), int(reply["message_id"]))
            if target is not None:
                message["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            elif not (reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply")):
                raise bad_request("message to be replied not found")
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            _check_inline_keyboard(markup)
            message["reply_markup"] = markup
        self._store_message(message)
        return message

    def _caption(self, params: JSONDict) -> JSONDict:
        caption = params.get("caption")
        if not caption:
            return {}
        check_formatting(caption, params.get("parse_mode"))
        if len(caption) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return {"caption": caption}

    def _api_sendmessage(self, params: JSONDict, files: dict) -> JSONDict:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        check_formatting(text, params.get("parse_mode"))
        if len(text) > MAX_TEXT:
            raise bad_request("message is too long")
        return self._bot_message(params, {"text": text})

    def _upload(self, params: JSONDict, files: dict, name: str) -> tuple[bytes, str]:
        if name in files:
            filename, data = files[name]
            return data, filename
        value = params.get(name)
        if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
            filename, data = files[value[9:]]
            return data, filename
        if isinstance(value, str) and value in self._files:
            stored = self._files[value]
            return stored.data, stored.file_path.rsplit("/", 1)[-1]
        raise bad_request(f"there is no {name} in the request")

    def _api_senddocument(self, params: JSONDict, files: dict) -> JSONDict:
        data, filename = self._upload(params, files, "document")
        ext = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        document = {**self._new_file(data, "documents", ext), "file_name": filename}
        return self._bot_message(params, {"document": document, **self._caption(params)})

    def _api_sendphoto(self, params: JSONDict, files: dict) -> JSONDict:
        data, _ = self._upload(params, files, "photo")
        return self._bot_message(params, {"photo": self._photo_sizes(data), **self._caption(params)})

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

    def _edit(self, params: JSONDict, changes: JSONDict) -> JSONDict:
        if params.get("inline_message_id"):
            return True  # type: ignore[return-value] - Telegram answers True for inline messages
        message = self._find_message(int(params.get("chat_id") or 0), int(params.get("message_id") or 0))
        if message is None:
            raise bad_request("message to edit not found")
        markup = params.get("reply_markup")
        new = dict(message)
        new.update(changes)
        new = {k: v for k, v in new.items() if v is not None}
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            _check_inline_keyboard(markup)
            new["reply_markup"] = markup
        else:
            new.pop("reply_markup", None)
        new.pop("edit_date", None)
        if new == {k: v for k, v in message.items() if k != "edit_date"}:
            raise bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message"
            )
        new["edit_date"] = int(time.time())
        message.clear()
        message.update(new)
        return message

    def _api_editmessagetext(self, params: JSONDict, files: dict) -> JSONDict:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        check_formatting(text, params.get("parse_mode"))
        if len(text) > MAX_TEXT:
            raise bad_request("MESSAGE_TOO_LONG")
        return self._edit(params, {"text": text})

    def _api_editmessagecaption(self, params: JSONDict, files: dict) -> JSONDict:
        return self._edit(params, self._caption(params) or {"caption": None})

    def _api_editmessagereplymarkup(self, params: JSONDict, files: dict) -> JSONDict:
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


def _error_body(status: int, description: str) -> bytes:
    return json.dumps({"ok": False, "error_code": status, "description": description}).encode()


def _same(actual: Any, expected: Any) -> bool:
    return actual == expected or (actual is not None and str(actual) == str(expected))


def _scope_key(scope: Any) -> str:
    if isinstance(scope, str):
        scope = json.loads(scope)
    if not scope:
        return "default"
    kind = scope.get("type", "default")
    if kind == "chat" or kind == "chat_administrators":
        return f"{kind}:{scope.get('chat_id')}"
    if kind == "chat_member":
        return f"chat_member:{scope.get('chat_id')}:{scope.get('user_id')}"
    return kind


def _check_inline_keyboard(markup: JSONDict) -> None:
    rows = markup.get("inline_keyboard")
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    for row in rows:
        for button in row:
            if not button.get("text"):
                raise bad_request("BUTTON_TEXT_EMPTY")  # hypothetical wording, close to Telegram's
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                raise bad_request("BUTTON_DATA_INVALID")


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A started :class:`FakeTelegram`, stopped after the test."""
    with FakeTelegram() as fake:
        yield fake
