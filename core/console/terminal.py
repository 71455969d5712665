"""A terminal chat over the same router: for trying the bot without Telegram, and for scripts.

Each input line is a command or text. Paths of image files in the line are attached as photos
(several paths make an album): ``/ocr examples/text/receipt.jpg`` or just the path. Buttons are
listed as numbered choices: type the number to press one. Reads stdin to EOF, so it works in a pipe:
``printf '/help\\n' | python bot.py --console``. The console user is an admin (it is the operator).

Photos the bot sends back are described, not saved: images stay in memory.

Every line gets an answer, whatever it holds: a problem the console itself sees (a file that is missing
or cannot be read, a line longer than a Telegram message, an empty line, a button number that does not
exist) is one plain line starting with five spaces; everything else goes to the router, which answers
through the message catalogue. Bytes that are not UTF-8 are read as they are (``surrogateescape``: a
file name in any encoding still opens) and shown as U+FFFD; control characters are shown escaped.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import logging
import os
import re
import shlex
import stat
import sys
from pathlib import Path
from typing import Any, TextIO

from core.contract.chat import Button, Chat, Incoming, Photo, Reply, User, VideoNote
from core.contract.errors import BadImage
from core.infra.images import DOCUMENT_MIME_TYPES, DOCUMENT_SUFFIXES, IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: The longest line the console passes on: Telegram's limit for the text of one message.
MAX_LINE = 4096
#: A bot command as Telegram recognises one at the start of a message: never taken for a file path.
_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")  # undecodable input bytes, read with surrogateescape
# characters that would move the cursor or break a console line: C0 (but tab), DEL, C1, line separators
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
#: A path with one of these suffixes is sent as a video note (the console's stand-in for the round camera button).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm")


def _decoded(text: str) -> str:
    """``text`` with each undecodable input byte as U+FFFD: what the bot sees of a line."""
    return _SURROGATE.sub("\ufffd", text)


def _visible(text: str, limit: int | None = None) -> str:
    """``text`` safe to print on one console line: decoded, control characters escaped, shortened."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)
    shown = _decoded(shown)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


def _describe_image(data: bytes) -> str:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return f"{img.width}×{img.height} {img.format}, {len(data) // 1024 + 1} KB"
    except Exception:
        return f"{len(data) // 1024 + 1} KB"


class ConsoleTransport:
    """Prints the bot's replies; remembers the last buttons so a number can press them."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.buttons: list[Button] = []
        self._next_id = 1

    def _print(self, prefix: str, text: str) -> None:
        lines = [_visible(line) for line in text.splitlines()] or [""]
        self.out.write(f"{prefix}{lines[0]}\n")
        for line in lines[1:]:
            self.out.write(f"{' ' * len(prefix)}{line}\n")
        self.out.flush()

    def _print_buttons(self, rows: list[list[Button]]) -> None:
        flat = [b for row in rows for b in row]
        if not flat:
            return
        self.buttons = flat
        for n, button in enumerate(flat, 1):
            target = f" → {button.url}" if button.url else ""
            self.out.write(f"      [{n}] {button.text}{target}\n")
        self.out.write("      (type a number to press a button)\n")
        self.out.flush()

    async def send(self, chat_id: int, reply: Reply) -> int | None:
        message_id = self._next_id
        self._next_id += 1
        if reply.photo is not None:
            self._print("bot> ", f"[photo: {_describe_image(reply.photo)}]")
        if reply.document is not None:
            doc = reply.document
            self._print("bot> ", f"[file: {doc.filename}, {len(doc.data) // 1024 + 1} KB]")
            if doc.mime_type.startswith("text/"):
                self._print("     ", doc.data.decode("utf-8", errors="replace"))
        if reply.text:
            self._print("bot> ", reply.text)
        self._print_buttons(reply.buttons)
        return message_id

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        self._print("bot (edited)> ", text)
        self._print_buttons(buttons)

    async def delete(self, chat_id: int, message_id: int) -> bool:
        self._print("bot> ", f"[message {message_id} deleted]")
        return True

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        return None

    def deep_link(self, payload: str) -> str:
        return f"/start {payload}"

    def photo_from_ref(self, ref: str, meta: dict[str, object]) -> Photo | None:
        """The file at ``ref`` again (a conversation kept it by its path), or None if it is gone."""
        path = Path(ref)
        return _file_photo(path, path.stat().st_size, path.name) if path.is_file() else None


def _file_photo(path: Path, size: int, name: str) -> Photo:
    path = path.resolve()

    async def load() -> bytes:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        except OSError as err:  # it could be read a moment ago: gone, or a read error
            raise BadImage(f"cannot read {name}: {err.strerror or err}") from None

    mime = DOCUMENT_MIME_TYPES[0] if path.suffix.lower() in DOCUMENT_SUFFIXES else None
    return Photo(load, ref=str(path), file_name=name, mime_type=mime, size=size, as_document=True)


def _find_file(token: str, max_bytes: float) -> Photo | str | None:
    """The photo a token names, a notice saying why it cannot be used, or None when it is no path.

    A token is a path when it contains ``/`` or ends in an image (or PDF) suffix. A path that names an existing
    regular file that can be read is a photo; an existing directory or other non-file is a notice; an
    image name that cannot be found or opened is a notice; anything else is a word of the text.
    (Worker thread: this touches the file system.)
    """
    image_name = os.path.splitext(token)[1].lower() in IMAGE_SUFFIXES + DOCUMENT_SUFFIXES
    if "/" not in token and not image_name:
        return None
    shown = _visible(token, 80)
    try:
        path = Path(token).expanduser()
        info = path.stat()
    except RuntimeError:  # ~name of no user, or no home directory
        user = token[1:].split("/", 1)[0] if token.startswith("~") else ""
        return f"no such file: {shown} (there is no user {_visible(user, 40)!r})" if image_name else None
    except ValueError:  # a NUL character: no file can have this name
        return f"no such file: {shown} (a file name cannot contain a NUL character)" if image_name else None
    except (FileNotFoundError, NotADirectoryError):
        if not image_name:
            return None
        if os.path.lexists(path):
            return f"no such file: {shown} (a symbolic link to something that does not exist)"
        return f"no such file: {shown}"
    except OSError as err:  # too long, permission denied on a folder, a symlink loop, …
        return f"cannot open {shown}: {(err.strerror or str(err)).lower()}" if image_name else None
    if stat.S_ISDIR(info.st_mode):
        return f"not a file: {shown} (a directory)"
    if not stat.S_ISREG(info.st_mode):
        return f"not a file: {shown} (a device, pipe or socket)"
    if info.st_size <= max_bytes:
        try:
            with path.open("rb") as file:
                file.read(1)
        except OSError as err:
            return f"cannot read {shown}: {(err.strerror or str(err)).lower()}"
    return _file_photo(path, info.st_size, _decoded(path.name))


def parse_line(line: str, user: User, chat: Chat, buttons: list[Button], max_file_mb: float) -> Incoming | str:
    """The :class:`Incoming` for one console line, or a string to print instead (a local problem).

    Never raises. Touches the file system (paths in the line): call it from a worker thread.
    """
    line = line.strip()
    if not line:
        return "(an empty line: type /help for the commands, or the path of an image)"
    if len(line) > MAX_LINE:
        return f"that line is too long ({len(line)} characters; a message holds at most {MAX_LINE})"
    if buttons and line.isascii() and line.isdigit():
        n = int(line) if len(line) <= 9 else 0
        if not 1 <= n <= len(buttons):
            choices = "1" if len(buttons) == 1 else f"1 to {len(buttons)}"
            return f"there is no button {_visible(line, 12)} (type {choices})"
        button = buttons[n - 1]
        if button.url:
            return f"(open this link in a browser: {button.url})"
        return Incoming(user, chat, callback_data=button.callback_data)
    try:
        tokens = shlex.split(line)
    except ValueError:  # an unclosed quote
        tokens = line.split()
    words: list[str] = []
    photos: list[Photo] = []
    video: VideoNote | None = None
    too_large = False
    max_bytes = max_file_mb * 1024 * 1024
    for index, token in enumerate(tokens):
        if index == 0 and _COMMAND.fullmatch(token):
            words.append(token)
            continue
        found = _find_file(token, max_bytes)
        if isinstance(found, str):
            return found
        if found is None:
            words.append(_decoded(token))
            continue
        too_large = too_large or (found.size or 0) > max_bytes
        if os.path.splitext(found.file_name or "")[1].lower() in VIDEO_SUFFIXES:
            video = VideoNote(found.loader, ref=found.ref, size=found.size)
            continue
        photos.append(found)
    error = "error.file_too_large" if too_large else "error.animation" if video is not None and not photos else None
    return Incoming(user, chat, " ".join(words), photos, error=error, video=video)


def _read_line(stdin: TextIO) -> tuple[str, int] | None:
    """(worker thread) The next line without its line break, and its length; None at end of input.

    Of a line longer than :data:`MAX_LINE` only the start is kept (the rest is read and dropped), so a
    huge line cannot fill the memory.
    """
    line = chunk = stdin.readline(MAX_LINE + 1)
    if not line:
        return None
    length = len(line)
    while chunk and not chunk.endswith("\n"):  # cut at the limit: read on to the line break or the end
        chunk = stdin.readline(1 << 16)
        length += len(chunk)
    if chunk.endswith("\n"):
        length -= 1
    return line.rstrip("\n"), length


class _TerminalLines:
    """Lines typed on a terminal, read by the event loop (``add_reader``) rather than by a thread.

    A thread blocked reading a terminal cannot be stopped, and ``asyncio.run`` waits for its executor's
    threads: Ctrl-C would wait for one more line. Same results as :func:`_read_line`.
    """

    def __init__(self, stdin: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = stdin.fileno()
        self._loop = loop
        self._decoder = codecs.getincrementaldecoder(stdin.encoding or "utf-8")(errors="surrogateescape")
        self._text = ""  # the line so far, at most MAX_LINE + 1 characters
        self._length = 0
        self._lines: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        loop.add_reader(self._fd, self._readable)  # NotImplementedError where the loop cannot

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the terminal went away: end of input
            data = b""
        self._add(self._decoder.decode(data, final=not data))
        if not data:  # Ctrl-D at the start of a line
            if self._text or self._length:
                self._lines.put_nowait((self._text, self._length))
            self._lines.put_nowait(None)
            self.close()

    def _add(self, chunk: str) -> None:
        while chunk:
            head, newline, chunk = chunk.partition("\n")
            self._length += len(head)
            self._text += head[: max(0, MAX_LINE + 1 - len(self._text))]
            if newline:
                self._lines.put_nowait((self._text, self._length))
                self._text, self._length = "", 0

    async def next(self) -> tuple[str, int] | None:
        return await self._lines.get()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


def _tolerant(stream: TextIO, errors: str) -> None:
    """Make a text stream of the process decode or encode without raising (``errors``)."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors != errors:
        try:
            stream.reconfigure(errors=errors)
        except (OSError, ValueError) as err:  # not reconfigurable once in use on some streams
            log.debug("cannot set errors=%s on %s: %s", errors, stream, err)


async def run_console(app: Any, *, stdin: TextIO = sys.stdin, language: str | None = None) -> None:
    """Chat on the terminal until EOF (Ctrl-D) or Ctrl-C. ``app``: the assembled bot (``core.runtime.app.App``)
    whose transport is a :class:`ConsoleTransport`; its output stream is the chat's."""
    transport: ConsoleTransport = app.transport
    out = transport.out
    _tolerant(stdin, "surrogateescape")  # invalid UTF-8 must not raise; a file name in any encoding opens
    _tolerant(out, "backslashreplace")  # a terminal that is not UTF-8 gets \uXXXX escapes, not a crash
    app.start()
    lang = language or app.config["language"]["default"]
    user = User(id=0, name=os.environ.get("USER", "console"), language=lang, is_admin=True)
    chat = Chat(id=0, type="private")
    echo = not stdin.isatty()
    out.write(app.catalogue.text(lang, "console.banner") + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    max_file_mb = app.config["telegram"]["max_file_mb"]
    terminal: _TerminalLines | None = None
    if not echo:
        try:
            terminal = _TerminalLines(stdin, loop)
        except (NotImplementedError, OSError, ValueError) as err:
            log.debug("console: reading the terminal in a thread (%s)", err)
    try:
        while True:
            if not echo:
                out.write("you> ")
                out.flush()
            if terminal is not None:
                read = await terminal.next()
            else:
                read = await loop.run_in_executor(None, _read_line, stdin)
            if read is None:
                break
            line, length = read
            if echo:
                out.write(f"you> {_visible(line.strip(), 200 if length > MAX_LINE else None)}\n")
            if length > MAX_LINE:
                parsed: Incoming | str = (
                    f"that line is too long ({length} characters; a message holds at most {MAX_LINE})"
                )
            else:
                try:
                    buttons = list(transport.buttons)
                    parsed = await loop.run_in_executor(None, parse_line, line, user, chat, buttons, max_file_mb)
                except Exception:  # a bug: say so and read on
                    log.exception("console: cannot handle the line %r", _visible(line, 200))
                    parsed = "(the console could not handle that line; the log says why)"
            if isinstance(parsed, str):
                out.write(f"     {parsed}\n")
                out.flush()
                continue
            await app.router.handle(parsed, transport)
    finally:
        if terminal is not None:
            terminal.close()
        app.stop()
