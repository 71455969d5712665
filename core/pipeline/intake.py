"""Durable intake: every update that reached the bot is answered — once — even if the process is killed.

The journal (table ``intake`` of the bot's database: ``storage.path``, or ``cluster.database_url``) records
each update **before** Telegram is told it arrived. With long polling Telegram considers an update
delivered when the next ``getUpdates`` asks for a higher ``offset``; :meth:`Intake.poll` therefore runs its
own loop — ``getUpdates`` → the whole batch written in one transaction → the batch queued for handling →
``getUpdates`` with the new offset — and never asks for the next batch before the previous one is
committed. A kill at any moment leaves each update either unconfirmed (Telegram sends it again) or in the
journal (replayed by :meth:`Intake.start` on the next start), or both (the journal drops the duplicate by
``update_id``).

Replies are idempotent: the ``n``-th message sent while handling update ``u`` is recorded as ``(u, n)`` once
Telegram accepted it (:class:`Replies`), so a replayed update skips the replies it already sent and goes
on from there. The window between the send and that record — the whole send round trip: the request, Telegram's
work, its answer, then the record's commit — is the only place where a kill can still cause one duplicate
message (the Bot API has no idempotency key to close it).

Order: the intake hands each journaled update to its dispatcher (:mod:`core.pipeline.dispatch`): the updates
of one chat are handled one after another, in arrival order; different chats run concurrently; the parts of an
album (one ``media_group_id``) are handled as one batch once ``album_wait`` seconds passed without a new part
(at most ``album_max_wait`` in all), so parts that arrive in separate batches still make one album.

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

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
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
from sqlalchemy.exc import SQLAlchemyError

from core.contract.chat import Button, Reply, Transport
from core.contract.i18n import resolve_language
from core.infra.store import insert_into
from core.pipeline.dispatch import Dispatcher
from core.pipeline.handler import WITHHELD, UpdateCodec

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
#: How often handled entries past :data:`KEEP_SECONDS` are deleted.
PRUNE_EVERY = 600.0
#: The longest pause between two failed ``getUpdates``.
MAX_POLL_BACKOFF = 30.0

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


#: The handler of a batch: the update (several for an album) and the transport to answer through.
Handle = Callable[[list[Entry], Transport], Awaitable[None]]
#: ``tell(db, update_id, body)``: let the user of a given-up update know, in the transaction that closes it.
GivenUp = Callable[[Connection, int, str], None]


def retry_after(err: BaseException) -> float:
    """The seconds a ``429 Too Many Requests`` asks to wait (PTB's ``RetryAfter``: an int or a timedelta), else 0."""
    value = getattr(err, "_retry_after", None)
    if value is None:
        value = err.__dict__.get("retry_after")
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


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


# ---------------------------------------------------------------------------------------------- replies
class Replies:
    """The transport as the handling of one update sees it: its ``n``-th ``send`` happens once.

    Everything else (edits, chat actions, ``photo_from_ref``, ``deep_link``) goes to the transport as is.
    """

    def __init__(self, transport: Transport, intake: Intake, update_id: int, sent: dict[int, int | None]) -> None:
        self._transport = transport
        self._intake = intake
        self.update_id = update_id
        self._sent = sent
        self._n = 0

    async def send(self, chat_id: int, reply: Reply) -> int | None:
        n, self._n = self._n, self._n + 1
        if n in self._sent:
            log.info("intake: reply %d to update %s was sent before the restart; not again", n, self.update_id)
            return self._sent[n]
        message_id = await self._transport.send(chat_id, reply)
        self._sent[n] = message_id
        await self._intake._run(Journal.replied, self.update_id, n, message_id)
        return message_id

    async def edit(self, chat_id: int, message_id: int, text: str, buttons: list[list[Button]]) -> None:
        await self._transport.edit(chat_id, message_id, text, buttons)

    async def delete(self, chat_id: int, message_id: int) -> bool:
        return await self._transport.delete(chat_id, message_id)

    async def chat_action(self, chat_id: int, action: str = "typing") -> None:
        await self._transport.chat_action(chat_id, action)

    def deep_link(self, payload: str) -> str:
        return self._transport.deep_link(payload)

    def __getattr__(self, name: str) -> Any:  # photo_from_ref and whatever else the transport offers
        return getattr(self._transport, name)


# ---------------------------------------------------------------------------------------------- intake
@dataclass(eq=False)
class Intake:
    """Journals updates, replays unfinished ones, and hands them to its dispatcher, which calls :meth:`process`.

    ``services``: the bot's services (``store``, ``run_db``); ``transport``: what replies go through; ``codec``: the
    edge's translation (chat and album of an update, the journal's form); ``handle``: what a batch is handled with
    (:class:`core.pipeline.handler.UpdateHandler`); ``dispatcher``: local queues, or Celery's.
    """

    services: Any
    transport: Transport
    codec: UpdateCodec
    handle: Handle
    dispatcher: Dispatcher
    _: KW_ONLY
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._pruner: asyncio.Task[None] | None = None
        self._open: set[int] = set()  # queued or being handled
        self._offset: int | None = None  # the next getUpdates offset (confirms everything below it)
        self._held: list[Entry] | None = None  # while earlier entries are replayed one at a time: the new ones
        self._tell_given_up = given_up_teller(self.services)
        self._replaying: asyncio.Task[None] | None = None
        self._stopping = False

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(db, now, *args)`` in one transaction, in the database's thread."""
        store, now = self.services.store, self.clock()
        return await self.services.run_db(store.transaction, lambda db: fn(db, now, *args))

    # ------------------------------------------------------------------ in
    async def start(self, *, prune: bool = True) -> int:
        """Create the journal; replay what a previous run left unfinished (before any new update is fetched) when
        the dispatcher replays; how many. ``prune``: forget handled entries past :data:`KEEP_SECONDS` now and then."""
        await self.services.run_db(self.services.store.create, *TABLES)
        await self.dispatcher.start(self.process)
        rows = []
        if self.dispatcher.replays:
            await self._run(Journal.prune)
            rows = await self._run(Journal.reopen, self._tell_given_up)
            self.services.outbox.wake()  # the messages of given-up updates
            now = self.clock()  # a replayed album waits `album_wait` from now for parts still to come
            entries = [self.entry(update_id, json.loads(body), attempts, now) for update_id, body, attempts in rows]
            if isolating(rows):
                log.warning("intake: the bot died again while replaying; replaying %d updates one at a time", len(rows))
                self._replay_alone(entries)
            else:
                for entry in entries:
                    await self._dispatch(entry)
            if rows:
                log.info("intake: replaying %d updates a previous run did not finish", len(rows))
        if prune:
            self._pruner = asyncio.get_running_loop().create_task(self._prune_every(), name="aipbot-intake-prune")
        return len(rows)

    async def receive(self, updates: list[dict[str, Any]]) -> int:
        """Journal a batch of updates (one transaction), then dispatch the new ones; how many were new.

        Returns only once the batch is committed: the caller may then confirm it to Telegram.
        """
        if not updates:
            return 0
        rows, withheld = [], set()
        for update in updates:
            update_id = int(update["update_id"])
            form = await self.codec.journal_form(update)
            if form.get(WITHHELD):
                withheld.add(update_id)
            rows.append((update_id, self.chat_key(update), json.dumps(form, ensure_ascii=False)))
        now = self.clock()
        new = set(await self.services.run_db(self.services.store.transaction, lambda db: Journal.record(db, now, rows)))
        count = 0
        for update in updates:
            update_id = int(update["update_id"])
            if update_id in new:
                new.discard(update_id)  # a batch holding one id twice is handled once
                entry = self.entry(update_id, update, 0, now)
                entry.withheld = update_id in withheld
                await self._dispatch(entry)
                count += 1
            else:
                log.info("intake: update %s arrived again; it is not handled twice", update_id)
        return count

    def chat_key(self, update: dict[str, Any]) -> str:
        """The queue an update is handled in: its chat, or one of its own (``update:<id>``) when it has none."""
        return self.codec.key(update)[0] or f"update:{update.get('update_id')}"

    def entry(self, update_id: int, body: dict[str, Any], attempts: int, received: float) -> Entry:
        _, group = self.codec.key(body)
        return Entry(update_id, body, self.chat_key(body), group, attempts, received)

    async def _dispatch(self, entry: Entry) -> None:
        if self.dispatcher.replays:  # handled here: known until it is done (a front end only passes it on)
            self._open.add(entry.update_id)
        if self._held is not None:  # after the one-at-a-time replay, in arrival order
            self._held.append(entry)
            return
        await self.dispatcher.dispatch(entry)

    async def poll(self, fetch: Callable[[int | None], Awaitable[list[dict[str, Any]]]]) -> None:
        """Long-poll until cancelled: ``fetch(offset)`` is one ``getUpdates``; each batch is journaled before
        the next call confirms it. Failed calls are retried with a growing pause (at most 30 s), and never before
        the ``retry_after`` of a 429."""
        offset: int | None = None
        backoff = 1.0
        while True:
            try:
                updates = await fetch(offset)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                wait = max(backoff, retry_after(err))  # a 429 says how long Telegram wants us to wait
                log.warning("getUpdates failed (%s: %s); again in %.0f s", type(err).__name__, err, wait)
                await asyncio.sleep(wait)
                backoff = min(MAX_POLL_BACKOFF, backoff * 2)
                continue
            backoff = 1.0
            if not updates:
                continue
            while True:  # the batch must be journaled before the next getUpdates confirms it
                try:
                    await self.receive(updates)
                    break
                except Exception as err:
                    log.error("intake: cannot journal %d updates (%r); again in 1 s", len(updates), err)
                    await asyncio.sleep(1)
            offset = self._offset = max(int(u["update_id"]) for u in updates) + 1

    def confirmable(self) -> int | None:
        """At shutdown: the offset a last ``getUpdates`` may confirm, so Telegram does not send handled
        updates again. With a database file everything received is journaled; in memory (``:memory:``)
        only what was handled, so unfinished updates come again after the restart."""
        if self._offset is None:
            return None
        if self.services.store.path == ":memory:" and self._open:
            return min(self._open)
        return self._offset

    # ------------------------------------------------------------------ poison updates (see the module docstring)
    def _replay_alone(self, entries: list[Entry]) -> None:
        """Replay ``entries`` one at a time (an album's parts together), each marked ``alone`` while handled; what
        arrives meanwhile is held and dispatched after."""
        self._held = []

        async def replay() -> None:
            try:
                for batch in _batches(entries):
                    if self._stopping:
                        return  # the rest stays open: replayed at the next start
                    await self._run(Journal.alone, [e.update_id for e in batch])
                    await self.process(batch)
            finally:
                held, self._held = self._held or [], None
                for entry in held if not self._stopping else []:
                    await self._dispatch(entry)

        self._replaying = asyncio.get_running_loop().create_task(replay(), name="aipbot-intake-replay-alone")

    # ------------------------------------------------------------------ handling
    async def process(self, batch: list[Entry]) -> None:
        """Handle one update (or album), then mark it done; a kill before that means a replay."""
        first = batch[0].update_id
        sent = await self._run(Journal.replies, first) if any(e.attempts for e in batch) else {}
        replies = Replies(self.transport, self, first, sent)
        try:
            await self.handle(batch, replies)
        except Exception:
            log.exception("intake: handling update %s failed", first)
        try:
            await self._run(Journal.finish, [e.update_id for e in batch])
        except (SQLAlchemyError, RuntimeError) as err:
            log.error("intake: could not mark update %s handled (%s): it will be replayed", first, err)
            return
        self._open.difference_update(e.update_id for e in batch)

    # ------------------------------------------------------------------ out
    async def _prune_every(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                count = await self._run(Journal.prune)
                if count:
                    log.info("intake: forgot %d handled updates older than %d h", count, KEEP_SECONDS // 3600)
            except Exception:
                log.exception("intake: pruning the journal failed")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish what is being handled (albums being collected are delivered now) for at most ``timeout``
        seconds; what is left stays in the journal and is replayed at the next start."""
        self._stopping = True
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        if self._replaying is not None:
            _, pending = await asyncio.wait([self._replaying], timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(self._replaying, return_exceptions=True)
        await self.dispatcher.stop(timeout)


def _batches(entries: list[Entry]) -> list[list[Entry]]:
    """``entries`` (in ``update_id`` order) as the batches they are handled in: an album's parts together."""
    batches: list[list[Entry]] = []
    for entry in entries:
        if entry.group is not None and batches and batches[-1][0].group == entry.group:
            batches[-1].append(entry)
        else:
            batches.append([entry])
    return batches
