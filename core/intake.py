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
on from there. The window between Telegram's acceptance and that record (a few milliseconds) is the only
place where a kill can still cause one duplicate message.

Order: the updates of one chat are handled one after another, in arrival order; different chats run
concurrently (grammY's ``sequentialize``). The parts of an album (one ``media_group_id``) are collected
in the chat's queue until ``album_wait`` seconds passed without a new part, at most ``album_max_wait``
seconds in all, so parts that arrive in separate batches still make one album.

Retention: what the journal keeps of an update is what the transport's ``scrub`` leaves (Telegram: no
names, no text that answers a plugin's question, which may be personal; see
:meth:`core.transports.telegram.TelegramTransport._scrub`) — the fresh update is handled from memory, a
replayed one from that form. That content (texts, captions, ``file_id``s: never photo bytes) is kept
only until it has been handled — then it is erased (``secure_delete``), and only the ``update_id`` and the reply marks
stay, for :data:`KEEP_SECONDS` (24 h, as long as Telegram keeps an update), to drop duplicates. An update
not handled after :data:`MAX_ATTEMPTS` starts, or older than :data:`KEEP_SECONDS`, is given up (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
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

from core.chat import Button, Reply, Transport
from core.logjson import log_context
from core.store import insert_into

log = logging.getLogger(__name__)

#: How long handled ``update_id``s (and their reply marks) are kept to drop duplicates; also the age after
#: which an update never handled is given up (Telegram itself keeps an update for 24 hours).
KEEP_SECONDS = 24 * 3600.0
#: Starts after which an update whose handling never finished is given up (it may be what kills the bot).
MAX_ATTEMPTS = 3
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
    """One journaled update: its JSON ``body`` as Telegram sent it, and how it is ordered.

    ``chat``: the key of the queue it is handled in (None: at once, in no order); ``group``: the album it
    belongs to (None: not an album); ``attempts``: how many earlier starts began handling it.
    """

    update_id: int
    body: dict[str, Any]
    chat: str | None = None
    group: str | None = None
    attempts: int = 0
    at: float = field(default_factory=time.monotonic)


#: What a transport says about an update: ``(chat key, album key)``.
Classify = Callable[[dict[str, Any]], tuple[str | None, str | None]]
#: The transport's handler: the update (several for an album) and the transport to answer through.
Handle = Callable[[list[Entry], Transport], Awaitable[None]]
#: What the journal keeps of an update (the transport drops names and personal answers).
Scrub = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


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
    def reopen(db: Connection, now: float) -> list[tuple[int, str, int]]:
        """The entries a previous run did not finish, oldest first, each counted as one more attempt;
        those past :data:`MAX_ATTEMPTS` or :data:`KEEP_SECONDS` are closed (and logged) instead."""
        c = intake.c
        rows = db.execute(
            select(c.update_id, c.body, c.attempts, c.received).where(c.done.is_(None)).order_by(c.update_id)
        ).fetchall()
        keep = []
        for update_id, body, attempts, received in rows:
            if attempts + 1 >= MAX_ATTEMPTS or received < now - KEEP_SECONDS or body is None:
                log.warning("intake: update %s given up after %d attempts", update_id, attempts + 1)
                db.execute(sql_update(intake).where(c.update_id == update_id).values(done=now, body=None))
                continue
            db.execute(sql_update(intake).where(c.update_id == update_id).values(attempts=c.attempts + 1))
            keep.append((update_id, body, attempts + 1))
        return keep

    @staticmethod
    def finish(db: Connection, now: float, ids: list[int]) -> None:
        """Mark handled and erase the content (only the id stays, for deduplication)."""
        if ids:
            stmt = sql_update(intake).where(intake.c.update_id == bindparam("b_id")).values(done=now, body=None)
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
        """Delete handled entries (and their reply marks) older than :data:`KEEP_SECONDS`."""
        c, old = intake.c, (intake.c.done.is_not(None)) & (intake.c.done < now - KEEP_SECONDS)
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
class _Queue:
    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Intake:
    """Journals updates, replays unfinished ones, and hands them to ``handle`` in per-chat order.

    ``services``: the bot's services (``store``, ``run_db``); ``transport``: what replies go through;
    ``classify``: the chat and album an update belongs to; ``handle``: the transport's handler.
    """

    services: Any
    transport: Transport
    classify: Classify
    handle: Handle
    _: KW_ONLY
    album_wait: float
    album_max_wait: float
    scrub: Scrub | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.album_max_wait = max(self.album_wait, self.album_max_wait)
        self._queues: dict[str, _Queue] = {}
        self._loose: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._pruner: asyncio.Task[None] | None = None
        self._open: set[int] = set()  # queued or being handled
        self._offset: int | None = None  # the next getUpdates offset (confirms everything below it)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(db, now, *args)`` in one transaction, in the database's thread."""
        store, now = self.services.store, self.clock()
        return await self.services.run_db(store.transaction, lambda db: fn(db, now, *args))

    # ------------------------------------------------------------------ in
    async def start(self) -> int:
        """Replay what a previous run left unfinished (before any new update is fetched); how many."""
        await self.services.run_db(self.services.store.create, *TABLES)
        await self._run(Journal.prune)
        rows = await self._run(Journal.reopen)
        for update_id, body, attempts in rows:
            self._enqueue(self._entry(update_id, json.loads(body), attempts))
        if rows:
            log.info("intake: replaying %d updates a previous run did not finish", len(rows))
        self._pruner = asyncio.get_running_loop().create_task(self._prune_every(), name="aipbot-intake-prune")
        return len(rows)

    async def receive(self, updates: list[dict[str, Any]]) -> int:
        """Journal a batch of updates (one transaction), then queue the new ones; how many were new.

        Returns only once the batch is committed: the caller may then confirm it to Telegram.
        """
        if not updates:
            return 0
        rows = []
        for update in updates:
            chat, _ = self.classify(update)
            rows.append((int(update["update_id"]), chat, json.dumps(await self._kept(update), ensure_ascii=False)))
        new = set(await self._run(Journal.record, rows))
        count = 0
        for update in updates:
            update_id = int(update["update_id"])
            if update_id in new:
                new.discard(update_id)  # a batch holding one id twice is handled once
                self._enqueue(self._entry(update_id, update, 0))
                count += 1
            else:
                log.info("intake: update %s arrived again; it is not handled twice", update_id)
        return count

    async def _kept(self, update: dict[str, Any]) -> dict[str, Any]:
        """What the journal keeps of ``update`` (the transport's ``scrub``)."""
        return await self.scrub(update) if self.scrub is not None else update

    async def poll(self, fetch: Callable[[int | None], Awaitable[list[dict[str, Any]]]]) -> None:
        """Long-poll until cancelled: ``fetch(offset)`` is one ``getUpdates``; each batch is journaled before
        the next call confirms it. Failed calls are retried with a growing pause (at most 30 s)."""
        offset: int | None = None
        backoff = 1.0
        while True:
            try:
                updates = await fetch(offset)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("getUpdates failed (%s: %s); again in %.0f s", type(err).__name__, err, backoff)
                await asyncio.sleep(backoff)
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

    def _entry(self, update_id: int, body: dict[str, Any], attempts: int) -> Entry:
        chat, group = self.classify(body)
        return Entry(update_id, body, chat, group, attempts)

    def _enqueue(self, entry: Entry) -> None:
        self._open.add(entry.update_id)
        if entry.chat is None:
            task = asyncio.get_running_loop().create_task(self._process([entry]))
            self._loose.add(task)
            task.add_done_callback(self._loose.discard)
            return
        queue = self._queues.get(entry.chat)
        if queue is None:
            queue = self._queues[entry.chat] = _Queue()
            queue.task = asyncio.get_running_loop().create_task(self._work(entry.chat, queue))
        queue.entries.append(entry)
        queue.wake.set()

    # ------------------------------------------------------------------ per chat, in order
    async def _work(self, chat: str, queue: _Queue) -> None:
        """Handle the chat's updates one after another until its queue is empty."""
        try:
            while queue.entries:
                entry = queue.entries.popleft()
                batch = [entry]
                if entry.group is not None:
                    await self._collect_album(queue, batch)
                await self._process(batch)
        finally:
            if self._queues.get(chat) is queue:
                del self._queues[chat]

    async def _collect_album(self, queue: _Queue, batch: list[Entry]) -> None:
        """Add the album's further parts as they arrive: until ``album_wait`` passed since the last one
        (at most ``album_max_wait`` in all), or another message of the chat comes first."""
        group = batch[0].group
        started = time.monotonic()
        while True:
            while queue.entries and queue.entries[0].group == group:
                batch.append(queue.entries.popleft())
            if queue.entries or self._stopping:
                return
            now = time.monotonic()
            deadline = min(max(e.at for e in batch) + self.album_wait, started + self.album_max_wait)
            if now >= deadline:
                return
            queue.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(queue.wake.wait(), deadline - now)

    @log_context(lambda self, batch: {"update_id": batch[0].update_id, "chat": batch[0].chat})
    async def _process(self, batch: list[Entry]) -> None:
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
        for queue in list(self._queues.values()):
            queue.wake.set()
        tasks = [q.task for q in self._queues.values() if q.task is not None] + list(self._loose)
        if self._pruner is not None:
            tasks.append(self._pruner)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning("intake: %d chats still busy at shutdown; replayed at the next start", len(pending))
