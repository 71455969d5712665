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
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from core.contract.codec import Codec
from core.contract.conversation import CHOICE, VIDEO, Conversation
from core.contract.i18n import Catalogue
from core.contract.messages import (
    Button,
    Chat,
    Document,
    Incoming,
    JoinRequest,
    Photo,
    Reply,
    User,
    VideoNote,
)

__all__ = [  # what plugins import from here: the message types are defined in core.contract.messages
    "Button",
    "Chat",
    "Command",
    "Context",
    "Document",
    "Handler",
    "Incoming",
    "JoinRequest",
    "PayloadHandler",
    "Photo",
    "Reply",
    "Services",
    "Transport",
    "User",
    "VideoNote",
]

if TYPE_CHECKING:  # what implements the services (the wings above the contract; never imported at run time)
    from core.infra.metrics import Metrics
    from core.infra.state import State
    from core.infra.store import Store
    from core.infra.web import WebServer
    from core.pipeline.conversation import Conversations
    from core.providers.baidu import BaiduClient
    from core.providers.webank import WebankClient
    from core.sending.outbox import Outbox

T = TypeVar("T")


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
      document of another type (``core.infra.images.is_document``) sent to the command gets "this is not an image".
    - ``on_callback``: ``async def f(ctx, data)`` for presses of buttons made with ``ctx.button``.
    - ``on_deep_link``: ``async def f(ctx, payload)`` for ``/start`` links made with ``ctx.deep_link``.
    - ``on_join_request``: ``async def f(ctx, request)`` for a :class:`JoinRequest` (``ctx.chat`` is the user's
      private chat with the bot).
    - ``ends_conversation``: running it ends the user's conversation in progress (the built-in ``/help``
      and ``/start`` do not, so a user can look something up and then send the awaited photo).
    - ``signed``: the command's button data and deep links carry a MAC, so ``on_callback`` and
      ``on_deep_link`` only ever see data the bot issued (see :mod:`core.contract.codec`); leave it off for links
      meant to be typed or shared.
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
    on_join_request: Callable[[Context, JoinRequest], Awaitable[None]] | None = None
    ends_conversation: bool = True
    signed: bool = False
    plugin: str = ""


class Transport(Protocol):
    """What the router needs from a transport to talk back. Message ids are transport-specific."""

    async def send(self, chat_id: int, reply: Reply) -> int | None: ...

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None: ...

    async def delete(self, chat_id: int, message_id: int) -> bool: ...

    async def chat_action(self, chat_id: int, action: str = "typing") -> None: ...

    def deep_link(self, payload: str) -> str: ...


#: A value of the validated config.yaml: plain YAML (``ctx.config`` is this plugin's section).
ConfigValue = str | int | float | bool | None | list["ConfigValue"] | dict[str, "ConfigValue"]


class Services(Protocol):
    """The bot's shared services, handed to plugins at start-up and through every Context.

    Typed by the classes that implement them (imported for type checkers only, so the contract imports no
    other wing at run time); ``provider`` is typed per provider name.
    """

    config: dict[str, ConfigValue]
    catalogue: Catalogue
    store: Store  # durable records (quotas, verification sessions): SQLAlchemy Core, SQLite or PostgreSQL
    state: State  # what the bot remembers between messages (expiring JSON values; Redis in cluster mode)
    conversations: Conversations  # the commands waiting for a user's next message (ctx.expect_* use it)
    codec: Codec  # callback data and deep-link payloads
    metrics: Metrics  # this bot's Prometheus metrics (gauge() for values read at scrape time)
    web: WebServer  # the web server's route registry (route(), ready_check(), url())
    outbox: Outbox  # messages that must arrive (stored first, retried until delivered)
    #: False in a cluster front end (``bot.py serve``): it runs no handler, so warming an engine there is waste
    handles_updates: bool

    async def run_db(self, fn: Callable[..., T], *args: object) -> T: ...

    async def run_blocking(self, fn: Callable[..., T], *args: object) -> T: ...

    async def run_cpu(self, fn: Callable[..., T], *args: object) -> T: ...

    async def send(self, chat_id: int, reply: Reply) -> int | None: ...

    @overload
    def provider(self, name: Literal["baidu"]) -> BaiduClient | None: ...
    @overload
    def provider(self, name: Literal["webank"]) -> WebankClient | None: ...
    @overload
    def provider(self, name: str) -> object | None: ...
    def provider(self, name: str) -> object | None: ...

    def every(self, seconds: float, job: Callable[[], Awaitable[None]], *, name: str = "job") -> None: ...

    def deep_link(self, command: str, payload: str, *, signed: bool = False) -> str: ...


@dataclass(eq=False)
class Context:
    """One invocation of a command (or of a button press or deep link) as a plugin sees it.

    A command that needs more than one message from the user keeps a *conversation*: it calls
    :meth:`expect_photo`, :meth:`expect_text` or :meth:`expect_choice` (optionally naming a ``step`` and keeping
    photos), and the user's next photo, text or button press comes back to the same handler with :attr:`step`,
    :attr:`data` and :attr:`kept` as it left them. Conversations live in the state store (they survive a restart
    with the SQLite store) and end on ``/cancel``, on another command, or after ``pending_minutes``.
    """

    services: Services
    transport: Transport
    user: User
    chat: Chat
    command: Command
    args: list[str] = field(default_factory=list)
    text: str = ""
    photos: list[Photo] = field(default_factory=list)
    message_id: int | None = None
    kept: list[Photo] = field(default_factory=list)
    """Photos an earlier step of this conversation kept (``expect_photo(keep=...)``)."""
    interrupted: bool = False
    """Whether this command ended another conversation in progress (``/cancel`` says so)."""
    choice: str | None = None
    """The data of the button the user pressed, when this step continues an :meth:`expect_choice`."""
    conversation: Conversation = field(default=None, repr=False)  # type: ignore[assignment]
    """The :class:`core.contract.conversation.Conversation` this invocation continues or starts (``step``, ``data``)."""
    video: VideoNote | None = None
    """The video note (or video, animation) that came to a step waiting for one (``expect_video``)."""

    def __post_init__(self) -> None:
        if self.conversation is None:
            self.conversation = Conversation(self.command.name, "")

    @property
    def lang(self) -> str:
        return self.user.language

    @property
    def config(self) -> dict[str, Any]:
        """This plugin's validated section of config.yaml."""
        plugins: dict[str, Any] = self.services.config["plugins"]  # type: ignore[assignment]
        return plugins.get(self.command.plugin, {})

    @property
    def step(self) -> str | None:
        """The step this message continues (what the last ``expect_*`` named); None for a new command."""
        return self.conversation.step

    @property
    def data(self) -> dict[str, Any]:
        """The conversation's data: plain JSON values, saved by ``expect_*`` and given back at the next step."""
        return self.conversation.data

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
        """A button whose press calls this command's ``on_callback(ctx, data)``.

        ``data`` plus the command name fits in 63 bytes (54 with ``Command.signed``).
        """
        return Button(
            text, callback_data=self.services.codec.callback(self.command.name, data, signed=self.command.signed)
        )

    def deep_link(self, payload: str) -> str:
        """A link that opens a private chat with the bot and calls ``on_deep_link(ctx, payload)``.

        ``payload``: ``[A-Za-z0-9_-]``; with the command name it fits in 63 characters (54 with
        ``Command.signed``).
        """
        return self.services.deep_link(self.command.name, payload, signed=self.command.signed)

    # ------------------------------------------------------------------ conversations
    async def expect_photo(self, step: str | None = None, *, keep: list[Photo] | None = None) -> None:
        """The user's next photo (or album) in this chat comes back to this handler, with :attr:`step` set
        to ``step``, :attr:`data` as it is now and :attr:`kept` holding ``keep`` (by reference: nothing of a
        photo is stored)."""
        await self._expect("photo", step, keep or [])

    async def expect_text(self, step: str | None = None, *, keep: list[Photo] | None = None) -> None:
        """The user's next plain text message in this chat comes back to this handler as :attr:`text`, with
        :attr:`message_id` set so the plugin can delete it (and :attr:`kept` holding ``keep``). A command
        still ends the wait."""
        await self._expect("text", step, keep or [])

    async def expect_choice(
        self, step: str | None, buttons: list[list[Button]], *, keep: list[Photo] | None = None
    ) -> list[list[Button]]:
        """A press of one of ``buttons`` (made with :meth:`button`) comes back to this handler — not to
        ``on_callback`` — with :attr:`choice` set to that button's data, :attr:`step` to ``step``, :attr:`data` as
        it is now and :attr:`kept` holding ``keep``. Returns ``buttons``, to send with the question::

            await ctx.reply(question, buttons=await ctx.expect_choice("size", rows, keep=ctx.photos))

        Buttons of an earlier question, ``/cancel``, another command or ``pending_minutes`` end the wait as for
        the other ``expect_*``; a text sent meanwhile gets the router's hint and the question stays open.
        """
        codec, mine = self.services.codec, {self.command.name: self.command.signed}
        choices = []
        for button in (b for row in buttons for b in row):
            packed = codec.open_callback(button.callback_data or "", mine)
            if packed is None:
                raise ValueError(f"{button.text!r} is not a button of /{self.command.name}: make it with ctx.button")
            choices.append(packed.data)
        await self._expect(CHOICE, step, keep or [], choices)
        return buttons

    async def expect_video(self, step: str | None = None) -> None:
        """The user's next message in this chat that is not a command or a button press — a video note, or
        whatever came instead (a video, a photo, a text) — comes back to this handler with :attr:`video` (or
        :attr:`photos`, :attr:`text`) set, so the plugin can refuse what is not a note. Nothing of a video is
        stored: only the conversation (step and data)."""
        await self._expect(VIDEO, step, [])

    async def _expect(self, wants: str, step: str | None, keep: list[Photo], choices: list[str] | None = None) -> None:
        conversation = self.conversation
        conversation.command, conversation.wants, conversation.step = self.command.name, wants, step
        conversation.args, conversation.counted, conversation.choices = list(self.args), True, choices or []
        await self.services.conversations.save(self.chat.id, self.user.id, conversation, keep)

    async def still_current(self) -> bool:
        """Whether the conversation this invocation keeps is still the user's (no ``/cancel``, no newer
        command or album meanwhile): check it after slow work, before answering."""
        return await self.services.conversations.is_current(self.chat.id, self.user.id, self.conversation.id)

    async def finish(self) -> None:
        """End this conversation now (it also ends when the handler returns without ``expect_*``)."""
        if await self.still_current():
            await self.services.conversations.drop(self.chat.id, self.user.id)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking I/O (a provider call) in the I/O worker pool."""
        return await self.services.run_blocking(fn, *args)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work (a local engine) in the engine worker pool."""
        return await self.services.run_cpu(fn, *args)

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database call (``services.store``) in the database's own thread: never behind provider calls."""
        return await self.services.run_db(fn, *args)
