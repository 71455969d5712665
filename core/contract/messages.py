"""What arrives and what is sent: users, chats, photos, video notes, join requests, buttons, documents, replies and
the :class:`Incoming` event a transport makes of an update (re-exported by :mod:`core.contract.chat`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from core.contract.errors import BadImage, UserFacingError


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


@dataclass(eq=False, repr=False)
class Media:
    """What a user sent as a file: its bytes load on first :meth:`read` (through ``loader``), are kept in memory
    only — never written to disk — and are dropped by :meth:`wipe`."""

    #: What :meth:`read` raises once the bytes were wiped (the user reads ``router.photo_expired``), and its detail.
    GONE = (UserFacingError, "the file was wiped")

    loader: Callable[[], Awaitable[bytes]] | None = field(repr=False)
    wiped: bool = field(default=False, init=False)
    _data: bytes | None = field(default=None, init=False, repr=False)

    async def read(self) -> bytes:
        """The bytes (downloaded once, kept in memory only, never written to disk)."""
        if self._data is None:
            if self.loader is None:
                kind, detail = self.GONE
                raise kind(detail, key="router.photo_expired")
            self._data = await self.loader()
        return self._data

    def wipe(self) -> None:
        """Drop the bytes (and the means to fetch them again): the file is no longer wanted."""
        self._data = None
        self.loader = None
        self.wiped = True

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> Self:
        media = cls(None, size=len(data), **kwargs)
        media._data = data
        return media


@dataclass(eq=False, repr=False)
class Photo(Media):
    """An image the user sent (a photo, or an image or PDF sent as a file). Its bytes load on first ``read``.

    ``ref`` is the transport's reference to it (Telegram's ``file_id``, a console file path), from which the
    transport can load it again later (see :mod:`core.pipeline.conversation`); None for bytes with no source.
    """

    META = ("file_name", "mime_type", "size", "width", "height", "as_document")
    GONE = (BadImage, "the photo was wiped")

    ref: str | None = None
    file_name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    as_document: bool = False

    def meta(self) -> dict[str, Any]:
        """What the transport said about the photo (no bytes): name, type, size, dimensions."""
        return {name: getattr(self, name) for name in self.META}

    def __repr__(self) -> str:  # never the bytes
        return f"Photo(file_name={self.file_name!r}, size={self.size}, {self.width}x{self.height})"


@dataclass(eq=False, repr=False)
class VideoNote(Media):
    """A video the user sent: a round video note (``kind`` ``video_note``), or an ordinary ``video`` or an
    ``animation`` (so a plugin waiting for a note can say what it got instead). Its bytes load on first ``read``
    (into memory only, never to disk); ``ref`` is the transport's reference (Telegram's ``file_id``).

    ``duration`` (seconds), ``length`` (a note's diameter, else the larger side, px), ``size`` (bytes) are what
    the transport reported before any download; ``forwarded`` whether the message was forwarded; ``sent_at`` the
    Unix time the message was sent (Telegram's ``date``). Unknown values are None.
    """

    GONE = (UserFacingError, "the video was wiped")

    ref: str | None = None
    kind: str = "video_note"
    duration: float | None = None
    length: int | None = None
    size: int | None = None
    forwarded: bool = False
    sent_at: float | None = None

    def __repr__(self) -> str:  # never the bytes
        return f"VideoNote({self.kind}, {self.duration} s, {self.length} px, {self.size} bytes)"


@dataclass(frozen=True)
class JoinRequest:
    """A user asked to join ``chat_id`` (a group or channel where the bot is an admin that may invite users:
    Telegram's ``chat_join_request``). The bot may write to the user at ``user_chat_id`` for 5 minutes (the
    :class:`Context` of ``Command.on_join_request`` replies there) and answers with the transport's
    ``answer_join_request(chat_id, user_id, approve)``."""

    chat_id: int
    user_chat_id: int
    title: str = ""
    date: float | None = None


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


@dataclass
class Incoming:
    """One thing a user did, in transport-neutral form.

    ``error`` is a catalogue key the transport already decided on (e.g. a file over the download
    limit); the router tells the user and does nothing else. ``key`` identifies what arrived across a
    replay (Telegram's ``update_id``): a replayed update counts against a daily quota only once.
    """

    user: User
    chat: Chat
    text: str = ""
    photos: list[Photo] = field(default_factory=list)
    message_id: int | None = None
    callback_data: str | None = None
    error: str | None = None
    key: str | None = None
    video: VideoNote | None = None  # a video note (or video, animation) the message carried
    join_request: JoinRequest | None = None  # a request to join a group (``Command.on_join_request``)
