"""The intake journal: the tables, their queries, and the rules for what is kept and what is given up.

Retention: what the journal keeps of an update is the edge codec's ``journal_form`` (Telegram: no names, no
text that answers a plugin's question, which may be personal; see
:meth:`core.telegram.decode.TelegramCodec.journal_form`) — the fresh update is handled from memory, a
replayed one from that form. That content (texts, captions, ``file_id``s: never photo bytes) is kept
only until it has been handled — then it is erased (``secure_delete``), and only the ``update_id`` and the reply marks
stay, for :data:`KEEP_SECONDS` (24 h, as long as Telegram keeps an update), to drop duplicates; a handled row
names no chat (``chat`` is cleared with the body).

Poison updates and kills (:meth:`Journal.reopen`): a bot killed from outside (``kill -9``, a power cut, a
deploy) and an update that crashes the bot each time it is handled both leave open entries behind; only the
second must be given up. So an attempt is counted only against an update that was being handled **alone**:

1. the first start after a death replays the open entries as usual, concurrently (each one's ``replays``
   counted): a kill from outside costs nothing more;
2. a start that finds entries replayed before (the process died again during their replay) replays them **one
   at a time**, in ``update_id`` order (an album's parts together), each marked ``alone`` while it is handled;
   updates arriving meanwhile are journaled and confirmed as usual, and handled once that replay is over;
3. a start that finds an entry still marked ``alone`` knows it was the one being handled when the process
   died: that counts one attempt against it. After :data:`MAX_ALONE` such deaths it is given up — logged, and its
   user gets a message (``intake.given_up``, through the outbox, in the transaction that closes the entry): never
   silence. So is an entry older than :data:`KEEP_SECONDS`.

An innocent update survives any number of kills from outside (one of them would have to land, twice, exactly
while it alone is being handled to be given up); a poison update is isolated after at most two more deaths and
given up after :data:`MAX_ALONE` of its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    delete,
    select,
    text,
)
from sqlalchemy import (
    update as sql_update,
)

from core.contract.chat import Reply
from core.contract.i18n import resolve_language
from core.infra.store import insert_into

log = logging.getLogger(__name__)

#: How long handled ``update_id``s (and their reply marks) are kept to drop duplicates; also the age after
#: which an update never handled is given up (Telegram itself keeps an update for 24 hours).
KEEP_SECONDS = 24 * 3600.0
#: Cluster mode: picks by a worker after which an update whose handling never finished is given up (a worker
#: process handles one batch at a time, so each pick is the update being handled alone; core.pipeline.cluster).
MAX_ATTEMPTS = 3
#: Deaths of the process while an update was being replayed alone after which it is given up (see the module
#: docstring: it is what kills the bot).
MAX_ALONE = 2
metadata = MetaData()
#: One row per update: its journaled form (``body``, erased once handled) and when it was handled.
intake = Table(
    "intake",
    metadata,
    Column("update_id", BigInteger, primary_key=True, autoincrement=False),
    Column("chat", Text),
    Column("body", Text),
    Column("received", Double, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("done", Double),
    Column("replays", Integer),  # starts that replayed it (NULL: none)
    Column("alone", Double),  # set while it is replayed alone: found set at a start, the process died handling it
    Index("intake_open", "done", "update_id"),
    Index("intake_chat", "chat", "done", "update_id"),  # a chat's open entries, in order (cluster mode)
)
#: The replies Telegram accepted: the ``n``-th message sent while handling ``update_id``.
intake_reply = Table(
    "intake_reply",
    metadata,
    Column("update_id", BigInteger, primary_key=True, autoincrement=False),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("message_id", BigInteger),
)
TABLES = (intake, intake_reply)


@dataclass
class Entry:
    """One journaled update: its JSON ``body`` as Telegram sent it (or the journal's form, on a replay), and how it
    is ordered.

    ``chat``: the key of the queue it is handled in; ``group``: the album it belongs to (None: not an album);
    ``attempts``: how many earlier runs began handling it (a replay: its reply marks are read); ``received``: when
    it was journaled (wall clock, the album rule's clock).
    """

    update_id: int
    body: dict[str, Any]
    chat: str
    group: str | None = None
    attempts: int = 0
    received: float = field(default_factory=time.time)
    #: its text was left out of the journal's form (the body in memory still has it)
    withheld: bool = False

    @classmethod
    def of(
        cls,
        key: Callable[[dict[str, Any]], tuple[str | None, str | None]],
        update_id: int,
        body: dict[str, Any],
        attempts: int = 0,
        received: float | None = None,
        *,
        withheld: bool = False,
    ) -> Entry:
        """The entry of ``body`` as the edge's ``key`` orders it: an update of no chat gets a queue of its own
        (``update:<id>``)."""
        chat, group = key(body)
        when = time.time() if received is None else received
        return cls(update_id, body, chat or f"update:{update_id}", group, attempts, when, withheld)


#: ``tell(db, update_id, body)``: let the user of a given-up update know, in the transaction that closes it.
GivenUp = Callable[[Connection, int, str], None]


def isolating(rows: list[tuple[int, str, int]]) -> bool:
    """Whether the entries :meth:`Journal.reopen` gave back are replayed one at a time: some were replayed before
    (the process died again during their replay)."""
    return any(replays > 1 for _, _, replays in rows)


def given_up_chat(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """The chat to tell about a given-up update, and its user's Telegram ``language_code``."""
    for name in ("message", "edited_message"):
        message = body.get(name)
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            return message["chat"].get("id"), (message.get("from") or {}).get("language_code")
    query = body.get("callback_query")
    if isinstance(query, dict):
        chat = ((query.get("message") or {}).get("chat") or {}).get("id")
        sender = query.get("from") or {}
        return (chat if chat is not None else sender.get("id")), sender.get("language_code")
    return None, None


def given_up_teller(services: Any) -> GivenUp:
    """``tell(db, update_id, body)``: queue, in ``db``'s transaction, the message telling the user of a given-up
    update (in its language) that it was given up (the outbox sends it)."""

    def tell(db: Connection, update_id: int, body: str) -> None:
        try:
            chat_id, code = given_up_chat(json.loads(body))
        except ValueError:
            chat_id, code = None, None
        if not isinstance(chat_id, int):
            return
        lang = resolve_language(code, services.config["language"]["default"])
        reply = Reply(services.catalogue.text(lang, "intake.given_up"))
        services.outbox.put_in(db, chat_id, reply, key=f"intake:given-up:{update_id}")

    return tell


# ---------------------------------------------------------------------------------------------- the journal
class Journal:
    """The ``intake`` tables; every method takes the connection (run them through ``Store.transaction``).

    ``db`` is a SQLAlchemy :class:`~sqlalchemy.Connection` of the bot's store (SQLite or PostgreSQL)."""

    @staticmethod
    def record(db: Connection, now: float, rows: list[tuple[int, str | None, str]]) -> list[int]:
        """Add the updates not seen before (``(update_id, chat, body)``); their ids. Two processes recording
        one update at once: one of them adds it (``ON CONFLICT DO NOTHING``, judged by the row count)."""
        new = []
        for update_id, chat, body in rows:
            stmt = insert_into(db, intake).values(update_id=update_id, chat=chat, body=body, received=now)
            if db.execute(stmt.on_conflict_do_nothing(index_elements=["update_id"])).rowcount:
                new.append(update_id)
        return new

    @staticmethod
    def reopen(db: Connection, now: float, tell: GivenUp | None = None) -> list[tuple[int, str, int]]:
        """The entries a previous run did not finish, oldest first: ``(update_id, body, replays)``, ``replays``
        counting this start (more than 1: replay them one at a time, see :func:`isolating`). An entry found marked
        ``alone`` counts one attempt; those at :data:`MAX_ALONE` attempts or older than :data:`KEEP_SECONDS` are
        closed instead, logged, and ``tell(db, update_id, body)`` (in this transaction) lets their user know."""
        c = intake.c
        query = select(c.update_id, c.body, c.attempts, c.received, c.replays, c.alone).where(c.done.is_(None))
        keep = []
        for update_id, body, attempts, received, replays, alone in db.execute(query.order_by(c.update_id)):
            attempts += alone is not None
            if attempts >= MAX_ALONE or received < now - KEEP_SECONDS or body is None:
                why = f"{attempts} deaths while handled alone" if attempts >= MAX_ALONE else "too old"
                log.warning("intake: update %s given up (%s); its user is told", update_id, why)
                if tell is not None and body is not None:
                    tell(db, update_id, body)
                Journal.finish(db, now, [update_id])
                continue
            replays = (replays or 0) + 1
            values = {"attempts": attempts, "replays": replays, "alone": None}
            db.execute(sql_update(intake).where(c.update_id == update_id).values(**values))
            keep.append((update_id, body, replays))
        return keep

    @staticmethod
    def alone(db: Connection, now: float, ids: list[int]) -> None:
        """Mark the entries being replayed alone (a death before :meth:`finish` counts against them)."""
        db.execute(sql_update(intake).where(intake.c.update_id.in_(ids)).values(alone=now))

    @staticmethod
    def finish(db: Connection, now: float, ids: list[int]) -> None:
        """Mark handled and erase the content and the chat (only the id stays, for deduplication)."""
        if ids:
            values = {"done": now, "body": None, "chat": None, "alone": None}
            stmt = sql_update(intake).where(intake.c.update_id == bindparam("b_id")).values(**values)
            db.execute(stmt, [{"b_id": i} for i in ids])

    @staticmethod
    def replies(db: Connection, now: float, update_id: int) -> dict[int, int | None]:
        """``n`` → message id of the replies to ``update_id`` Telegram already accepted."""
        c = intake_reply.c
        rows = db.execute(select(c.n, c.message_id).where(c.update_id == update_id)).fetchall()
        return {n: message_id for n, message_id in rows}

    @staticmethod
    def replied(db: Connection, now: float, update_id: int, n: int, message_id: int | None) -> None:
        stmt = insert_into(db, intake_reply).values(update_id=update_id, n=n, message_id=message_id)
        db.execute(stmt.on_conflict_do_update(index_elements=["update_id", "n"], set_={"message_id": message_id}))

    @staticmethod
    def prune(db: Connection, now: float) -> int:
        """Delete handled entries (and their reply marks) older than :data:`KEEP_SECONDS`; a handled entry of an
        older version that still names its chat forgets it."""
        c, old = intake.c, (intake.c.done.is_not(None)) & (intake.c.done < now - KEEP_SECONDS)
        db.execute(sql_update(intake).where(c.done.is_not(None), c.chat.is_not(None)).values(chat=None))
        db.execute(delete(intake_reply).where(intake_reply.c.update_id.in_(select(c.update_id).where(old))))
        return db.execute(delete(intake).where(old)).rowcount


def batches(entries: list[Entry]) -> list[list[Entry]]:
    """``entries`` (in ``update_id`` order) as the batches they are handled in: an album's parts together."""
    batches: list[list[Entry]] = []
    for entry in entries:
        if entry.group is not None and batches and batches[-1][0].group == entry.group:
            batches[-1].append(entry)
        else:
            batches.append([entry])
    return batches
