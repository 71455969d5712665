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

What the journal keeps, for how long, and how poison updates are told from kills: :mod:`core.pipeline.journal`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.contract.chat import Button, Reply, Transport
from core.infra.logjson import log_context
from core.pipeline.dispatch import Dispatcher
from core.pipeline.handler import WITHHELD, UpdateCodec
from core.pipeline.journal import KEEP_SECONDS, TABLES, Entry, Journal, batches, given_up_teller, isolating

log = logging.getLogger(__name__)

#: How often handled entries past :data:`KEEP_SECONDS` are deleted.
PRUNE_EVERY = 600.0
#: The longest pause between two failed ``getUpdates``.
MAX_POLL_BACKOFF = 30.0

#: The handler of a batch: the update (several for an album) and the transport to answer through.
Handle = Callable[[list[Entry], Transport], Awaitable[None]]


def retry_after(err: BaseException) -> float:
    """The seconds a ``429 Too Many Requests`` asks to wait (PTB's ``RetryAfter``: an int or a timedelta), else 0."""
    value = getattr(err, "_retry_after", None)
    if value is None:
        value = err.__dict__.get("retry_after")
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


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
            key = self.codec.key
            entries = [Entry.of(key, update_id, json.loads(body), attempts, now) for update_id, body, attempts in rows]
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
        now, entries, rows = self.clock(), [], []
        for update in updates:
            form = await self.codec.journal_form(update)
            entry = Entry.of(
                self.codec.key, int(update["update_id"]), update, 0, now, withheld=bool(form.get(WITHHELD))
            )
            entries.append(entry)
            rows.append((entry.update_id, entry.chat, json.dumps(form, ensure_ascii=False)))
        new = set(await self.services.run_db(self.services.store.transaction, lambda db: Journal.record(db, now, rows)))
        count = 0
        for entry in entries:
            if entry.update_id in new:
                new.discard(entry.update_id)  # a batch holding one id twice is handled once
                await self._dispatch(entry)
                count += 1
            else:
                log.info("intake: update %s arrived again; it is not handled twice", entry.update_id)
        return count

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
                for batch in batches(entries):
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
    @log_context(lambda self, batch: {"update_id": batch[0].update_id, "chat": batch[0].chat})
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
