"""The transport-neutral chat API: everything a plugin sees and returns.

A plugin never imports ``telegram``. It declares :class:`Command` objects; when one is invoked the
router calls its handler with a :class:`Context` that holds the user, the chat, the arguments and the
photos, and offers ``reply``, ``progress``, buttons and deep links. The transport (Telegram, console)
turns replies into its own calls, so a plugin works unchanged on every transport and in tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from core.i18n import Catalogue

T = TypeVar("T")


@dataclass(frozen=True)
class User:
    """Who sent the message. ``language`` is already resolved to a catalogue language (``en``/``zh``)."""

    id: int
    name: str = ""
    username: str | None = None
    language: str = "en"
    is_admin: bool = False


@dataclass(frozen=True)
class Chat:
    """Where the message was sent: ``type`` is ``private``, ``group``, ``supergroup`` or ``channel``."""

    id: int
    type: str = "private"

    @property
    def is_private(self) -> bool:
        return self.type == "private"


class Photo:
    """An image the user sent (a photo, or an image sent as a file). Its bytes load on first ``read``."""

    def __init__(
        self,
        loader: Callable[[], Awaitable[bytes]],
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        as_document: bool = False,
    ) -> None:
        self._loader = loader
        self._data: bytes | None = None
        self.file_name = file_name
        self.mime_type = mime_type
        self.size = size
        self.width = width
        self.height = height
        self.as_document = as_document

    async def read(self) -> bytes:
        """The image bytes (downloaded once, kept in memory only, never written to disk)."""
        if self._data is None:
            self._data = await self._loader()
        return self._data

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> Photo:
        async def load() -> bytes:
            return data

        return cls(load, size=len(data), **kwargs)

    def __repr__(self) -> str:  # never the bytes
        return f"Photo(file_name={self.file_name!r}, size={self.size}, {self.width}x{self.height})"


@dataclass(frozen=True)
class Button:
    """A button under a reply: it opens ``url``, or sends ``callback_data`` back to the bot.

    Plugins build callback buttons with :meth:`Context.button` so the press is routed back to them.
    """

    text: str
    url: str | None = None
    callback_data: str | None = None


@dataclass(frozen=True)
class Document:
    """A file sent with a reply."""

    filename: str
    data: bytes
    mime_type: str = "application/octet-stream"


@dataclass
class Reply:
    """One outgoing message: text, optional button rows, and optionally one photo or one document.

    With a photo or a document, ``text`` is its caption (the transport sends a long caption as a
    separate message).
    """

    text: str = ""
    buttons: list[list[Button]] = field(default_factory=list)
    photo: bytes | None = None
    document: Document | None = None


Handler = Callable[["Context"], Awaitable[None]]
PayloadHandler = Callable[["Context", str], Awaitable[None]]


@dataclass
class Command:
    """A chat command a plugin offers.

    - ``name``: without the slash, ``[a-z0-9_]``, at most 32 characters.
    - ``help``: a message-catalogue key; its text appears in ``/help`` and in Telegram's command menu.
    - ``handler``: ``async def handler(ctx)``.
    - ``admin_only``: refused (politely) to anyone not in ``access.admins``.
    - ``takes_photos``: the command works on photos. Invoked without one, the router asks for a photo
      and keeps the command pending for a few minutes; the next photo (or album) is delivered to it.
    - ``max_photos``: how many photos one invocation takes (an album is cut to this many).
    - ``documents``: MIME types of documents other than images the command reads (``/ocr``: PDF). A
      document of another type (``core.images.is_document``) sent to the command gets "this is not an image".
    - ``on_callback``: ``async def f(ctx, data)`` for presses of buttons made with ``ctx.button``.
    - ``on_deep_link``: ``async def f(ctx, payload)`` for ``/start`` links made with ``ctx.deep_link``.
    - ``plugin``: filled in by the plugin manager.
    """

    name: str
    help: str
    handler: Handler
    admin_only: bool = False
    takes_photos: bool = False
    max_photos: int = 1
    documents: tuple[str, ...] = ()
    on_callback: PayloadHandler | None = None
    on_deep_link: PayloadHandler | None = None
    plugin: str = ""


class Transport(Protocol):
    """What the router needs from a transport to talk back. Message ids are transport-specific."""

    async def send(self, chat_id: int, reply: Reply) -> int | None: ...

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None: ...

    async def delete(self, chat_id: int, message_id: int) -> bool: ...

    async def chat_action(self, chat_id: int, action: str = "typing") -> None: ...

    def deep_link(self, payload: str) -> str: ...


class Services(Protocol):
    """The bot's shared services, handed to plugins at start-up and through every Context."""

    config: dict[str, Any]
    catalogue: Catalogue
    store: Any  # core.store.Store

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def send(self, chat_id: int, reply: Reply) -> int | None: ...

    def provider(self, name: str) -> Any: ...

    def every(self, seconds: float, job: Callable[[], Awaitable[None]], *, name: str = "job") -> None: ...

    def deep_link(self, command: str, payload: str) -> str: ...


class Context:
    """One invocation of a command (or of a button press or deep link) as a plugin sees it."""

    def __init__(
        self,
        *,
        services: Services,
        transport: Transport,
        user: User,
        chat: Chat,
        command: Command,
        args: list[str] | None = None,
        text: str = "",
        photos: list[Photo] | None = None,
        message_id: int | None = None,
        keep_pending: Callable[[bool], None] | None = None,
        pending: dict[str, Any] | None = None,
    ) -> None:
        self.services = services
        self.transport = transport
        self.user = user
        self.chat = chat
        self.command = command
        self.args = list(args or [])
        self.text = text
        self.photos = list(photos or [])
        self.message_id = message_id
        self._keep_pending = keep_pending
        self.pending: dict[str, Any] = pending if pending is not None else {}
        """Scratch state of a pending command (e.g. the first photo of a pair): it lives while the command
        stays pending (see :meth:`expect_photo`) and is dropped on ``/cancel`` or expiry. Memory only."""

    @property
    def lang(self) -> str:
        return self.user.language

    @property
    def config(self) -> dict[str, Any]:
        """This plugin's validated section of config.yaml."""
        return self.services.config["plugins"].get(self.command.plugin, {})

    def t(self, key: str, **params: Any) -> str:
        """The catalogue text for ``key`` in the user's language."""
        return self.services.catalogue.text(self.lang, key, **params)

    async def reply(
        self,
        text: str | Reply = "",
        *,
        buttons: list[list[Button]] | None = None,
        photo: bytes | None = None,
        document: Document | None = None,
    ) -> int | None:
        """Send a message to this chat; returns its message id where the transport has one."""
        reply = text if isinstance(text, Reply) else Reply(text, buttons or [], photo, document)
        return await self.transport.send(self.chat.id, reply)

    async def edit(self, message_id: int, text: str, buttons: list[list[Button]] | None = None) -> None:
        """Change the text (and buttons) of a message the bot sent, e.g. a status line."""
        await self.transport.edit(self.chat.id, message_id, text, buttons or [])

    async def delete_message(self, message_id: int | None = None) -> bool:
        """Delete a message (the incoming one by default); False where the bot may not delete it."""
        target = message_id if message_id is not None else self.message_id
        if target is None:
            return False
        return await self.transport.delete(self.chat.id, target)

    @contextlib.asynccontextmanager
    async def progress(self) -> AsyncIterator[None]:
        """Show "typing…" for as long as the block runs (for work that takes more than a moment)."""
        import asyncio

        async def typing() -> None:
            with contextlib.suppress(Exception):
                await self.transport.chat_action(self.chat.id, "typing")

        async def keep_typing() -> None:
            while True:  # Telegram shows a chat action for about 5 seconds
                await asyncio.sleep(4)
                await typing()

        await typing()
        task = asyncio.create_task(keep_typing())
        try:
            yield
        finally:
            task.cancel()
            # gather, not `await task` under suppress(): that keeps this frame (and the Context with its
            # photos) referenced from the exception's traceback until the next command runs
            await asyncio.gather(task, return_exceptions=True)

    def button(self, text: str, data: str) -> Button:
        """A button whose press calls this command's ``on_callback(ctx, data)`` (data ≤ 40 bytes)."""
        return Button(text, callback_data=f"{self.command.name}:{data}")

    def deep_link(self, payload: str) -> str:
        """A link that opens a private chat with the bot and calls ``on_deep_link(ctx, payload)``.

        ``payload``: ``[A-Za-z0-9_-]``, at most 40 characters.
        """
        return self.services.deep_link(self.command.name, payload)

    def expect_photo(self) -> None:
        """Keep this command pending: the user's next photo in this chat comes back to it, with
        :attr:`pending` as this call left it (until ``/cancel`` or ``pending_minutes`` pass)."""
        if self._keep_pending:
            self._keep_pending(False)

    def expect_text(self) -> None:
        """Keep this command pending for the user's next plain text message in this chat (e.g. an answer
        to a question): it comes back to the handler as :attr:`text`, with :attr:`message_id` set so the
        plugin can delete it, and :attr:`pending` as this call left it. A command still ends the wait."""
        if self._keep_pending:
            self._keep_pending(True)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking I/O (a provider call) in the I/O worker pool."""
        return await self.services.run_blocking(fn, *args)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work (a local engine) in the engine worker pool."""
        return await self.services.run_cpu(fn, *args)
