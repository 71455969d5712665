"""The conversation record: what one command waiting for the user's next message remembers.

A plugin sees it through ``ctx.step``, ``ctx.data`` and ``ctx.kept`` (:class:`core.contract.chat.Context`);
the store of every chat's conversations, with its expiry and the photos held by reference, is
:class:`core.pipeline.conversation.Conversations`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

#: What a conversation waits for: a photo, a text, or a button press (``Context.expect_choice``, and the
#: router's own "which command are these photos for?").
PHOTO, TEXT, CHOICE = "photo", "text", "choice"
#: A step waiting for a video note (``ctx.expect_video``): it takes any message that is not a command or a button.
VIDEO = "video"


@dataclass
class Conversation:
    """One command waiting for the user (serialisable: :meth:`to_json` / :meth:`from_json`)."""

    command: str | None  # None: the router asks which command the photos are for
    wants: str  # PHOTO, TEXT, CHOICE or VIDEO
    args: list[str] = field(default_factory=list)
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    photos: list[dict[str, Any]] = field(default_factory=list)
    counted: bool = False  # the command already ran once: its quota use was counted
    choices: list[str] = field(default_factory=list)  # CHOICE of a command: the data of the buttons offered
    id: str = field(default_factory=lambda: secrets.token_hex(8))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> Conversation | None:
        """The conversation stored as ``value``; None for a record this version cannot read (it is dropped)."""
        try:
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in value.items() if k in names})
        except (AttributeError, TypeError):
            log.warning("dropping a conversation record of an unknown shape")
            return None
