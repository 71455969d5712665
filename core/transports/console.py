"""A terminal chat over the same router: for trying the bot without Telegram, and for scripts.

Each input line is a command or text. Paths of image files in the line are attached as photos
(several paths make an album): ``/ocr ../shared/data/text/receipt.jpg`` or just the path. Buttons are
listed as numbered choices: type the number to press one. Reads stdin to EOF, so it works in a pipe:
``printf '/help\\n' | python bot.py --console``. The console user is an admin (it is the operator).

Photos the bot sends back are described, not saved: images stay in memory.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import sys
from pathlib import Path
from typing import TextIO

from core.app import App
from core.chat import Button, Chat, Photo, Reply, User
from core.images import DOCUMENT_MIME_TYPES, DOCUMENT_SUFFIXES, IMAGE_SUFFIXES
from core.router import Incoming


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
        lines = text.splitlines() or [""]
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


def _file_photo(path: Path) -> Photo:
    async def load() -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)

    mime = DOCUMENT_MIME_TYPES[0] if path.suffix.lower() in DOCUMENT_SUFFIXES else None
    return Photo(load, file_name=path.name, mime_type=mime, size=path.stat().st_size, as_document=True)


def parse_line(line: str, user: User, chat: Chat, buttons: list[Button], max_file_mb: float) -> Incoming | str:
    """The :class:`Incoming` for one console line, or a string to print instead (a local problem)."""
    line = line.strip()
    if line.isdigit() and buttons:
        n = int(line)
        if not 1 <= n <= len(buttons):
            return f"there is no button {n}"
        button = buttons[n - 1]
        if button.url:
            return f"(open this link in a browser: {button.url})"
        return Incoming(user, chat, callback_data=button.callback_data)
    try:
        tokens = shlex.split(line)
    except ValueError:
        tokens = line.split()
    words: list[str] = []
    photos: list[Photo] = []
    too_large = False
    for token in tokens:
        path = Path(token).expanduser()
        looks_like_path = "/" in token or path.suffix.lower() in IMAGE_SUFFIXES + DOCUMENT_SUFFIXES
        if looks_like_path and path.is_file():
            too_large = too_large or path.stat().st_size > max_file_mb * 1024 * 1024
            photos.append(_file_photo(path))
        elif path.suffix.lower() in IMAGE_SUFFIXES + DOCUMENT_SUFFIXES:
            return f"no such file: {token}"
        else:
            words.append(token)
    return Incoming(user, chat, " ".join(words), photos, error="error.file_too_large" if too_large else None)


async def run_console(
    app: App,
    *,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    language: str | None = None,
) -> None:
    """Chat on the terminal until EOF (Ctrl-D) or Ctrl-C."""
    transport = ConsoleTransport(out)
    app.start(transport)
    lang = language or app.config["language"]["default"]
    user = User(id=0, name=os.environ.get("USER", "console"), language=lang, is_admin=True)
    chat = Chat(id=0, type="private")
    echo = not stdin.isatty()
    out.write(app.catalogue.text(lang, "console.banner") + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    try:
        while True:
            if not echo:
                out.write("you> ")
                out.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            if echo:
                out.write(f"you> {line.rstrip()}\n")
            parsed = parse_line(line, user, chat, transport.buttons, app.config["telegram"]["max_file_mb"])
            if isinstance(parsed, str):
                out.write(f"     {parsed}\n")
                out.flush()
                continue
            await app.router.handle(parsed, transport)
    finally:
        app.stop()
