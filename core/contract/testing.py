"""The test kit for plugins: the bot in process, driven message by message, as the built-in plugins test themselves.

A plugin published through the ``aipbot`` entry point tests itself with it (pytest with pytest-asyncio,
``asyncio_mode = "auto"``), without the bot's ``tests/``::

    from aipbot_imageinfo import Plugin
    from core.contract.testing import image, plugin_bot

    async def test_imageinfo():
        async with plugin_bot("imageinfo", Plugin, units="KiB") as bot:
            [reply] = await bot.send("/imageinfo", photos=[image(640, 480, "PNG")])
        assert reply.text.startswith("640×480 PNG, ")

What runs is the real bot: config validation (the plugin's schema included), the plugin manager, the message
catalogue, the router with its access rules, quotas and conversations, the executors; only the transport is
a recorder (:class:`RecordingTransport`) and the database is in memory. :meth:`Harness.send` and
:meth:`Harness.press` return the replies the bot sent in answer.

This module sits above the other wings (it assembles the bot): nothing in the bot imports it.
"""

from __future__ import annotations

import copy
import io
from typing import Any

from PIL import Image

from core.contract.chat import Button, Chat, Incoming, Photo, Reply, User
from core.contract.i18n import gaps
from core.runtime.app import App
from core.runtime.config import validate
from core.runtime.plugins import instantiate

__all__ = [
    "BASE_CONFIG",
    "Harness",
    "RecordingTransport",
    "assert_catalogue_complete",
    "image",
    "merge",
    "plugin_bot",
]

#: What a test bot starts from: no plugins, an in-memory database, no keys (no Telegram, no provider).
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
    """A transport that records every call the router and plugins make (sent, edited, deleted, chat actions)."""

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
    """The bot assembled from a config dict (merged over :data:`BASE_CONFIG`), driven message by message.

    ``extra_plugins``: plugins by name that are not installed — a class (one instance is made), an object or a
    module — known like the built-in ones; each still runs only when ``overrides["plugins"]`` has its section.
    Use it as ``async with Harness(...) as bot:`` (the plugins start and stop with the block).
    """

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
        """The user ``user_id`` (an admin when ``access.admins`` lists it)."""
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

    async def press(
        self, button: Button, *, user_id: int = 1, chat_id: int | None = None, language: str = "en"
    ) -> list[Reply]:
        """The user presses ``button`` (a callback button) under a bot message; returns the bot's replies."""
        assert button.callback_data is not None, f"{button} is not a callback button"
        incoming = Incoming(
            self.user(user_id, language),
            Chat(chat_id if chat_id is not None else user_id),
            callback_data=button.callback_data,
        )
        return await self.deliver(incoming)

    async def deliver(self, incoming: Incoming) -> list[Reply]:
        """Hand ``incoming`` to the router as a transport would; the replies sent meanwhile."""
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


def plugin_bot(name: str, plugin: object, config: dict[str, Any] | None = None, **section: Any) -> Harness:
    """A :class:`Harness` running ``plugin`` (its class, an object or its module) as ``plugins.<name>`` with the
    config keys ``section`` (validated against its schema); ``config``: more of config.yaml (``access``, …)."""
    return Harness(merge(config or {}, {"plugins": {name: section}}), extra_plugins={name: plugin})


def image(width: int = 64, height: int = 48, format: str = "JPEG", color: str = "white") -> bytes:
    """A plain image of that size and format, as a user would send it."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format)
    return out.getvalue()


def assert_catalogue_complete(plugin: object) -> None:
    """Every text of ``plugin``'s catalogue (its ``aipbot_messages``) exists in English and Chinese, with the same
    placeholders. (The bot runs with gaps, showing English and logging a warning; a test should not pass.)"""
    messages = instantiate(plugin).aipbot_messages()
    problems = gaps(messages or {})
    assert not problems, "; ".join(problems)
