"""The Bot API's rules, as the fake Bot API (:mod:`tests.fakes.telegram`) applies them: no server, no state.

How requests are decoded (:func:`decode_params`; PTB sends form fields, JSON-encoding every non-string value), how
errors are answered (:class:`ApiError`: ``bad_request``, ``too_many_requests``), what Telegram refuses
(:func:`check_text`, :func:`check_caption`, :func:`check_html`, :func:`check_markdown_v2`, :func:`inline_keyboard`,
:func:`check_commands`), and how it describes what it got (:class:`Call`, :func:`photo_variants`,
:func:`command_entities`).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image

from tests.fakes.server import Upload, parse_form

JSONDict = dict[str, Any]

#: Parameters whose value is a plain string even when it looks like a number or JSON ("123", "true").
# fmt: off
STRING_PARAMS = frozenset({
    "text", "caption", "parse_mode", "callback_query_id", "file_id", "language_code", "action", "url", "title",
    "description", "short_description", "name", "emoji", "business_connection_id", "message_effect_id",
    "inline_message_id", "secret_token", "inline_query_id", "question", "address", "ip_address",
})
#: Tags Telegram accepts in ``parse_mode=HTML``.
HTML_TAGS = frozenset({
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji", "code", "pre",
    "blockquote",
})
# fmt: on
#: Telegram's limits (https://core.telegram.org/bots/api).
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_GETFILE_SIZE = 20 * 1024 * 1024
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_BOT_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")


class ApiError(Exception):
    """An error answer: ``{"ok": false, "error_code": status, "description": description[, "parameters": ...]}``."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def answer(self) -> JSONDict:
        """The JSON answer Telegram gives."""
        answer = {"ok": False, "error_code": self.status, "description": self.description}
        return answer | {"parameters": self.parameters} if self.parameters else answer

    def response(self) -> tuple[int, str, bytes]:
        """The HTTP answer: ``(status, content type, body)``."""
        return json_response(self.status, self.answer())


def bad_request(reason: str) -> ApiError:
    """A ``400 Bad Request: <reason>`` error, worded like Telegram's."""
    return ApiError(400, reason if reason.startswith("Bad Request") else f"Bad Request: {reason}")


def too_many_requests(retry_after: int) -> ApiError:
    """Telegram's flood-control answer: ``429`` with ``parameters.retry_after``."""
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


def json_response(status: int, answer: JSONDict) -> tuple[int, str, bytes]:
    """``(status, "application/json", body)``."""
    return status, "application/json", json.dumps(answer).encode()


@dataclass
class Call:
    """One Bot API request the bot made, as the server understood it and answered it.

    Attributes:
        method: The method name as the bot spelled it (``"sendMessage"``).
        params: The decoded parameters (ints, bools, dicts and lists already JSON-decoded).
        files: Uploaded files by multipart field name: ``{"document": ("report.pdf", b"...")}``.
        at: When it arrived (``time.monotonic()``).
        result: The ``result`` answered (e.g. the sent Message dict), ``None`` when the call failed.
        error: The error description answered (``"Bad Request: message can't be deleted"``), else ``None``.
        status: The HTTP status answered; ``None`` when the connection was dropped.
        fault: Why it failed when it was not the request's fault: a :meth:`FakeTelegram.fail` kind
            (``"429"``, ``"5xx"``, ``"400"``, ``"drop"``, ``"stall"``) or ``"rate"`` (:meth:`FakeTelegram.limit_rate`).
    """

    method: str
    params: JSONDict
    files: dict[str, Upload] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    result: Any = None
    error: str | None = None
    status: int | None = None
    fault: str | None = None

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
        return json.loads(markup) if isinstance(markup, str) else markup

    @property
    def buttons(self) -> list[list[JSONDict]]:
        """The inline keyboard as rows of button dicts (``{"text": ..., "callback_data": ...}``); ``[]`` if none."""
        return [list(row) for row in (self.reply_markup or {}).get("inline_keyboard", [])]

    @property
    def callback_data(self) -> list[str]:
        """The ``callback_data`` of every inline button, row by row."""
        return [b["callback_data"] for row in self.buttons for b in row if "callback_data" in b]

    @property
    def file(self) -> Upload | None:
        """The first uploaded file as ``(filename, bytes)``, if any."""
        return next(iter(self.files.values()), None)

    def __str__(self) -> str:
        """A short one-line description for failure messages."""
        bits = [self.method]
        if self.chat_id is not None:
            bits.append(f"chat_id={self.chat_id}")
        if self.text is not None:
            bits.append(f"text={self.text if len(self.text) <= 80 else self.text[:77] + '...'!r}")
        if self.files:
            bits.append("files=" + ",".join(f"{k}:{name}({len(data)} B)" for k, (name, data) in self.files.items()))
        if self.error:
            bits.append(f"error={self.error!r}")
        return " ".join(bits)


# -- request decoding -------------------------------------------------------------------------------------------------


def _decode_value(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in STRING_PARAMS:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, dict | list | bool | int | float) else value


def decode_params(
    body: bytes, content_type: str, query: Mapping[str, str] | str = ""
) -> tuple[JSONDict, dict[str, Upload]]:
    """Decode a Bot API request's parameters from its query and its JSON / urlencoded / multipart body.

    Form values are JSON-decoded (PTB JSON-encodes every non-string value) except :data:`STRING_PARAMS`.
    """
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query)
    if body and content_type.split(";")[0].strip().lower() == "application/json":
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise bad_request("JSON body is not an object")
        return {**{k: _decode_value(k, v) for k, v in raw.items()}, **payload}, {}
    fields, files = parse_form(body, content_type)
    return {k: _decode_value(k, v) for k, v in (raw | fields).items()}, files


# -- formatting checks, the way Telegram rejects messages it cannot parse ---------------------------------------------


def check_html(text: str) -> None:
    """Raise the ``can't parse entities`` error Telegram gives for invalid ``parse_mode=HTML`` text."""
    stack: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "<":
            match = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*>").match(text, pos)
            if not match:
                raise bad_request(f"can't parse entities: Unexpected end of name token at byte offset {pos}")
            closing, tag = match.group(1), match.group(2).lower()
            if tag not in HTML_TAGS:
                kind = "end" if closing else "start"
                raise bad_request(f'can\'t parse entities: Unsupported {kind} tag "{tag}" at byte offset {pos}')
            if not closing:
                stack.append(tag)
            elif not stack:
                raise bad_request(f'can\'t parse entities: Unexpected end tag at byte offset {pos}: "</{tag}>"')
            elif stack[-1] != tag:
                raise bad_request(
                    f'can\'t parse entities: Unmatched end tag at byte offset {pos}, expected "</{stack[-1]}>", '
                    f'found "</{tag}>"'
                )
            else:
                stack.pop()
            pos = match.end()
        elif text[pos] == "&":
            match = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);").match(text, pos)
            if not match:
                raise bad_request(f"can't parse entities: Character entity expected at byte offset {pos}")
            if match.group(1)[0] != "#" and match.group(1) not in ("lt", "gt", "amp", "quot"):
                raise bad_request(f"can't parse entities: Unsupported HTML entity at byte offset {pos}")
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
        if char == "\\" or stripped[pos : pos + 2] == "||":
            pos += 2
            continue
        if char in "#+-={}.!()|" or (char == ">" and pos > 0 and stripped[pos - 1] != "\n"):
            raise bad_request(
                f"can't parse entities: Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        pos += 1


def check_formatting(text: str, parse_mode: str | None) -> None:
    """Check *text* against *parse_mode* (HTML and MarkdownV2; legacy Markdown is not checked)."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        check_html(text)
    elif mode == "markdownv2":
        check_markdown_v2(text)


def check_text(text: Any, parse_mode: str | None, limit: int = MAX_TEXT, too_long: str = "message is too long") -> str:
    """*text* if Telegram would send it: not empty, parseable, at most *limit* characters."""
    if not isinstance(text, str) or not text.strip():
        raise bad_request("message text is empty")
    check_formatting(text, parse_mode)
    if len(text) > limit:
        raise bad_request(too_long)
    return text


def check_caption(params: JSONDict) -> JSONDict:
    """The caption fields of the bot's request (``{}`` without one), checked like a text (1024 characters)."""
    caption = params.get("caption")
    if not caption:
        return {}
    check_formatting(caption, params.get("parse_mode"))
    if len(caption) > MAX_CAPTION:
        raise bad_request("message caption is too long")
    return {"caption": caption}


def check_commands(commands: Any) -> list[JSONDict]:
    """The BotCommands of a ``setMyCommands`` request (at most 100, lowercase names, 1-256 character descriptions)."""
    if not isinstance(commands, list) or len(commands) > 100:
        raise bad_request("commands must be a list of at most 100 BotCommand")
    for command in commands:
        if not _COMMAND_RE.match(str(command.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise bad_request("command description must be 1-256 characters")
    return [{"command": c["command"], "description": c["description"]} for c in commands]


def inline_keyboard(params: JSONDict) -> JSONDict | None:
    """The request's inline keyboard (checked as Telegram does), ``None`` when there is none."""
    markup = params.get("reply_markup")
    if not (isinstance(markup, dict) and "inline_keyboard" in markup):
        return None
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    for button in (button for row in rows for button in row):
        if not button.get("text"):
            raise bad_request("BUTTON_TEXT_EMPTY")  # hypothetical wording, close to Telegram's
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
            raise bad_request("BUTTON_DATA_INVALID")
    return markup


# -- what Telegram makes of what it got -------------------------------------------------------------------------------


def command_entities(key: str, text: str | None) -> JSONDict:
    """``{key: [bot_command entity]}`` when *text* starts with a ``/command``, else ``{}``."""
    match = _BOT_COMMAND_RE.match(text or "")
    return {key: [{"type": "bot_command", "offset": 0, "length": len(match.group(0))}]} if match else {}


def photo_variants(data: bytes) -> list[tuple[bytes, int, int]]:
    """The PhotoSizes Telegram makes of an image, smallest first: 90 and 320 px JPEG thumbnails where the image is
    larger, then the image itself; always at least two. Bytes Pillow cannot read pass for an 800x600 image."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image: Image.Image | None = opened.convert("RGB")
    except Exception:  # not an image Pillow knows
        image = None
    width, height = image.size if image else (800, 600)
    variants = []
    for side in (90, 320):
        if max(width, height) <= side:
            break
        if image is None:
            scale = side / max(width, height)
            variants.append((data, max(1, round(width * scale)), max(1, round(height * scale))))
            continue
        thumb, out = image.copy(), io.BytesIO()
        thumb.thumbnail((side, side))
        thumb.save(out, "JPEG", quality=80)
        variants.append((out.getvalue(), thumb.width, thumb.height))
    variants.append((data, width, height))
    return variants if len(variants) > 1 else variants * 2  # a tiny image gets a same-size "thumbnail"


def scope_key(params: JSONDict) -> tuple[str, str]:
    """``(scope key, language_code)`` of a ``*MyCommands`` request: ``("default", "")``, ``("chat:<id>", "fr")``..."""
    scope = params.get("scope")
    scope = (json.loads(scope) if isinstance(scope, str) else scope) or {}
    kind = scope.get("type", "default")
    if kind in ("chat", "chat_administrators"):
        kind = f"{kind}:{scope.get('chat_id')}"
    elif kind == "chat_member":
        kind = f"chat_member:{scope.get('chat_id')}:{scope.get('user_id')}"
    return kind, params.get("language_code") or ""
