"""From a journaled update to the router: the edge's codec decodes it, this handler acts on what it says.

The edge (:mod:`core.telegram.decode`) implements :class:`UpdateCodec`: which chat and album an update belongs to,
what the journal may keep of it, and what it means (:class:`Decoded`). The intake calls :class:`UpdateHandler`
with each batch and the :class:`~core.pipeline.intake.Replies` its answers go through.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.contract.chat import Incoming, Reply, Transport

if TYPE_CHECKING:
    from core.contract.i18n import Catalogue
    from core.infra.metrics import Metrics
    from core.pipeline.journal import Entry
    from core.pipeline.router import Router

log = logging.getLogger(__name__)

#: Set in the journal's form of an update whose text was left out (a name and an ID number, a long number):
#: after a restart the user is asked to send it again; in cluster mode it reaches the worker sealed.
WITHHELD = "aipbot_withheld"
#: The fields of a message left out of the journal's form when it is withheld.
WITHHELD_FIELDS = ("text", "caption", "entities", "caption_entities")


@dataclass
class Decoded:
    """What one update (or the parts of one album) means.

    ``incoming``: the event for the router (None: nothing to run, e.g. an edited message); ``chat_id`` and
    ``language``: where and how to tell the user something went wrong; ``withheld``: replayed without its text
    (the user is asked to send it again); ``notice``: a message key sent before the event (a part of an album that
    cannot be used); ``query_id``: a button press to acknowledge.
    """

    incoming: Incoming | None = None
    chat_id: int | None = None
    language: str = "en"
    withheld: bool = False
    notice: str | None = None
    query_id: str | None = None


class UpdateCodec(Protocol):
    """The edge's translation of its updates (plain JSON, as journaled)."""

    def key(self, update: dict[str, Any]) -> tuple[str | None, str | None]:
        """``(chat, album)``: the queue an update is handled in, and the album it belongs to."""

    async def journal_form(self, update: dict[str, Any]) -> dict[str, Any]:
        """What the journal keeps of ``update`` (no names; :data:`WITHHELD` set where a text was left out)."""

    def kind(self, update: dict[str, Any]) -> str:
        """The update's kind for the metrics (``message``, ``callback_query``, …)."""

    def decode(self, entries: list[Entry]) -> Decoded:
        """What ``entries`` (one update, or an album's parts) mean."""


class UpdateHandler:
    """Decode a batch, acknowledge a button press, tell the user about a part that cannot be used, then route."""

    def __init__(self, codec: UpdateCodec, router: Router, catalogue: Catalogue, metrics: Metrics) -> None:
        self.codec = codec
        self.router = router
        self.catalogue = catalogue
        self.metrics = metrics

    async def __call__(self, entries: list[Entry], transport: Transport) -> None:
        """Handle one journaled update (or the updates of one album); replies go through ``transport``."""
        for entry in entries:
            self.metrics.update_received(self.codec.kind(entry.body))
        decoded = self.codec.decode(entries)
        try:
            if decoded.withheld and decoded.chat_id is not None:  # replayed without its text: sent again
                await transport.send(decoded.chat_id, Reply(self.catalogue.text(decoded.language, "intake.send_again")))
                return
            if decoded.query_id is not None:
                acknowledge = getattr(transport, "acknowledge", None)
                if acknowledge is not None:
                    await acknowledge(decoded.query_id)
            if decoded.incoming is None:
                return  # an edited message (or anything else) runs nothing
            if decoded.notice is not None:
                text = self.catalogue.text(decoded.incoming.user.language, decoded.notice)
                await transport.send(decoded.incoming.chat.id, Reply(text))
            await self.router.handle(decoded.incoming, transport)
        except Exception:
            log.error("error while handling update %s", entries[0].update_id, exc_info=True)
            if decoded.chat_id is not None:
                text = self.catalogue.text(decoded.language, "error.generic")
                with contextlib.suppress(Exception):
                    await transport.send(decoded.chat_id, Reply(text))
