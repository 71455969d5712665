"""An in-process bot for tests: the real config validation, plugin manager, router and plugins, with a
transport that records what the bot sends.

    async with Harness({"plugins": {"ocr": {"enabled": True, "engine": "local"}}}) as bot:
        replies = await bot.send("/ocr", photos=[png_bytes])       # -> list[Reply] sent in answer
        replies = await bot.press(replies[0].buttons[0][0])         # a button press

The overrides are merged over a minimal configuration (no plugins, an in-memory database, no keys).
"""

from __future__ import annotations

import copy
from typing import Any

from core.contract.chat import Button, Chat, Photo, Reply, User
from core.pipeline.router import Incoming
from core.runtime.app import App
from core.runtime.config import validate

BASE_CONFIG: dict[str, Any] = {"storage": {"path": ":memory:"}, "plugins": {}}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, recursively for mappings."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class RecordingTransport:
    """Records every call the router and plugins make."""

    bot_username = "aipbot_test_bot"

    def __init__(self) -> None:
        self.sent: list[tuple[int, Reply]] = []
        self.edits: list[tuple[int, int, str]] = []
        self.deleted: list[tuple[int, int]] = []
        self.actions: list[tuple[int, str]] = []
        self.can_delete = True

    async def send(self, chat_id: int, reply: Reply) -> int | None:
        self.sent.append((chat_id, reply))
        return len(self.sent)

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        self.edits.append((chat_id, message_id, text))

    async def delete(self, chat_id: int, message_id: int) -> bool:
        if self.can_delete:
            self.deleted.append((chat_id, message_id))
        return self.can_delete

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        self.actions.append((chat_id, action))

    def deep_link(self, payload: str) -> str:
        return f"https://t.me/{self.bot_username}?start={payload}"


class Harness:
    """The bot assembled from a config dict, driven message by message."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, extra_plugins: dict[str, Any] | None = None) -> None:
        self.config = validate(merge(BASE_CONFIG, overrides or {}))
        self.transport = RecordingTransport()
        self.app = App(self.config, extra_plugins, transport=self.transport)
        self._message_id = 100

    async def __aenter__(self) -> Harness:
        self.app.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.app.stop()

    def user(self, user_id: int = 1, language: str = "en", name: str = "Ada") -> User:
        admins = self.config["access"]["admins"]
        return User(id=user_id, name=name, language=language, is_admin=user_id in admins)

    async def send(
        self,
        text: str = "",
        *,
        photos: list[bytes] | None = None,
        user_id: int = 1,
        chat_id: int | None = None,
        chat_type: str = "private",
        language: str = "en",
    ) -> list[Reply]:
        """The user sends ``text`` (a command, or a caption) with ``photos``; returns the bot's replies."""
        self._message_id += 1
        incoming = Incoming(
            self.user(user_id, language),
            Chat(chat_id if chat_id is not None else user_id, chat_type),
            text,
            [Photo.from_bytes(p, file_name=f"photo{i}.jpg") for i, p in enumerate(photos or [])],
            self._message_id,
        )
        return await self.deliver(incoming)

    async def press(self, button: Button, *, user_id: int = 1, chat_id: int | None = None) -> list[Reply]:
        """The user presses ``button`` (a callback button) under a bot message."""
        assert button.callback_data is not None, f"{button} is not a callback button"
        incoming = Incoming(
            self.user(user_id), Chat(chat_id if chat_id is not None else user_id), callback_data=button.callback_data
        )
        return await self.deliver(incoming)

    async def deliver(self, incoming: Incoming) -> list[Reply]:
        before = len(self.transport.sent)
        await self.app.router.handle(incoming, self.transport)
        return [reply for _, reply in self.transport.sent[before:]]

    @staticmethod
    def text(replies: list[Reply]) -> str:
        """All reply texts (and text documents) joined, for assertions."""
        parts = []
        for reply in replies:
            parts.append(reply.text)
            if reply.document is not None and reply.document.mime_type.startswith("text/"):
                parts.append(reply.document.data.decode("utf-8"))
        return "\n".join(parts)


def assert_in_both_languages(keys: object) -> None:
    """Every catalogue key in ``keys`` has an English and a Chinese text (the core catalogue)."""
    from core.contract.i18n import core_catalogue

    catalogue = core_catalogue()
    for key in keys:  # type: ignore[attr-defined]
        assert key in catalogue.keys("en") and key in catalogue.keys("zh"), key
