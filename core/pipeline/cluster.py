"""Cluster mode: stateless webhook front ends (``bot.py serve``) and Celery workers (``bot.py worker``).

What a task is: **"handle what chat C has waiting"** (:data:`CHAT_TASK`, one argument: the chat key). A front
end checks a webhook update (:mod:`core.telegram.webhook`), journals it in the shared database (the intake journal:
``update_id`` is its primary key, so a delivery Telegram repeats, to this front end or another, is dropped),
answers 200, and sends one task for the update's chat. A worker that takes the task takes the chat's lock in
Redis (``lock:chat:<chat>``), then handles the chat's open journal entries oldest first — one update, or the
parts of one album — until none is left; a task that finds the lock taken ends at once, because the holder
looks for new entries after releasing the lock and takes the chat again when there are some. So:

- **order per chat** across processes: one holder per chat, entries in ``update_id`` order;
- **any worker continues any chat**: conversations are in the Redis state, photos are Telegram ``file_id``s,
  the journal and the reply marks are in the shared database;
- **an album whose parts reached different front ends** is one batch: the parts meet in the journal, and the
  holder waits ``telegram.album_wait`` seconds after the newest part (at most ``album_max_wait``) before
  handling them together;
- **nothing lost**: the task is acknowledged late (``acks_late``), so a worker killed mid-task leaves it
  unacknowledged and Redis gives it to another worker after ``cluster.visibility_timeout``; the chat's lock
  lapses after ``cluster.chat_lock_seconds`` (the holder renews it while it works). Every worker also looks
  at the journal every ``cluster.sweep_seconds`` for chats with entries older than that and no holder (a front
  end killed between journaling and sending the task, a broker that lost it) and sends their task again (a
  duplicate task finds nothing open, or the chat held, and ends at once);
- **one answer**: an entry is marked done after its handling, and the replies of a handling that was cut
  short are recorded per update (``intake_reply``), so a second handling skips what was sent.

Why the whole update is the task and not only its heavy step: the front end then needs no engine, no
provider client and no photo bytes (a photo is a ``file_id``: the worker downloads it), the broker carries a
chat id and nothing personal, and a plugin's handler runs unchanged, in one process from its first reply to
its last. The heavy step still runs in the worker's own pools (``workers.cpu`` threads per worker process).

A text that answers a plugin's question (``ctx.expect_text``: WeBank's name and ID number) is never journaled
(see :meth:`core.telegram.decode.TelegramCodec.journal_form`); the front end hands it to the worker through the
Redis state under ``withheld:<update_id>``, encrypted (:class:`Sealer`), for at most :data:`WITHHELD_SECONDS`, and
the worker deletes it as it reads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update

from core.infra import keys
from core.infra.sealing import Sealer
from core.pipeline.dispatch import Process, album_left
from core.pipeline.handler import WITHHELD, WITHHELD_FIELDS, UpdateCodec
from core.pipeline.journal import MAX_ATTEMPTS, Entry, Journal, given_up_teller, intake

log = logging.getLogger(__name__)

#: The Celery task: handle what a chat has waiting (argument: the chat key of the journal).
CHAT_TASK = "aipbot.chat"
#: The purpose the withheld texts' key is derived for (change the version to rotate it).
SEALING = b"aipbot withheld v1"
#: Seconds a withheld text waits in Redis for its worker.
WITHHELD_SECONDS = 300.0


def celery_app(config: dict[str, Any]) -> Any:
    """The Celery application of the ``cluster:`` section: Redis broker, late acknowledgement, one task at a time
    per worker process, time limits, a visibility timeout longer than the longest task."""
    from celery import Celery

    cluster = config["cluster"]
    app = Celery("aipbot", broker=cluster["broker_url"] or cluster["redis_url"])
    limit = cluster["task_time_limit"]
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged when it ended: a worker that dies leaves it to another
        task_reject_on_worker_lost=True,  # a worker process killed mid-task: the task goes back to the queue
        worker_prefetch_multiplier=1,  # a worker process holds one task (the one it runs), never a backlog
        task_time_limit=limit,
        task_soft_time_limit=max(1.0, limit - 5),
        task_default_queue=cluster["queue"],
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": cluster["visibility_timeout"],  # unacknowledged this long: delivered again
            "unacked_restore_interval": cluster["restore_seconds"],
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,  # our handler (with the redacting filter) stays
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def check_broker(url: str) -> None:
    """A :class:`ConfigError` naming ``cluster.broker_url`` (one line, no password) when it does not answer."""
    import redis

    from core.contract.fields import ConfigError
    from core.infra.state.redis import shown_url

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as err:
        raise ConfigError("cluster.broker_url", f"cannot connect to {shown_url(url)} ({type(err).__name__})") from None
    finally:
        client.close()


@dataclass
class _Open:
    update_id: int
    body: str | None
    received: float
    attempts: int


class CeleryDispatcher:
    """The dispatcher of a cluster process (:class:`core.pipeline.dispatch.Dispatcher`): a front end (``front``)
    sends a task per journaled update; a worker drains the chats its tasks name (:meth:`drain`) and sweeps.

    ``send_task(chat)``: sends :data:`CHAT_TASK` (blocking; run in the I/O pool); ``codec``: the edge's
    translation (an entry's album); ``token``: the bot token the withheld texts' key is derived from;
    ``lock_seconds``, ``sweep_seconds``: the ``cluster:`` settings ``chat_lock_seconds`` and ``sweep_seconds``.
    """

    replays = False  # a worker sweeps what was left, every sweep_seconds

    def __init__(
        self,
        services: Any,
        codec: UpdateCodec,
        *,
        send_task: Callable[[str], None],
        front: bool,
        token: str,
        album_wait: float,
        album_max_wait: float,
        lock_seconds: float = 30.0,
        sweep_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.codec = codec
        self.send_task = send_task
        self.front = front
        self.album_wait = album_wait
        self.album_max_wait = max(album_wait, album_max_wait)
        self.lock_seconds = lock_seconds
        self.sweep_seconds = sweep_seconds
        self.clock = clock
        self._sealer = Sealer.for_token(token, SEALING)
        self._tell_given_up = given_up_teller(services)
        self._process: Process | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        store, now = self.services.store, self.clock()
        return await self.services.run_db(store.transaction, lambda db: fn(db, now, *args))

    async def start(self, process: Process) -> None:
        self._process = process
        if not self.front:  # a worker
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_every(), name="aipbot-cluster-sweep")

    async def _sweep_every(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("cluster: the sweep failed")

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=timeout)

    # ------------------------------------------------------------------ front end
    async def dispatch(self, entry: Entry) -> None:
        """A new journaled update: its withheld text handed over sealed, then one task for its chat (a failure is
        logged: the sweep finds the entry)."""
        if entry.withheld:
            await self._hand_over(entry)
        task = asyncio.get_running_loop().create_task(self._send(entry.chat, entry.update_id))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, chat: str, update_id: int) -> None:
        try:
            await self.services.run_blocking(self.send_task, chat)
        except Exception as err:
            log.warning(
                "cluster: could not send the task for update %s (%s: %s); a worker's sweep will handle it",
                update_id,
                type(err).__name__,
                err,
            )

    async def _hand_over(self, entry: Entry) -> None:
        """The text the journal leaves out goes to the worker through Redis: encrypted (AES-GCM, a key derived from
        the bot token, the update id as associated data), deleted when read, gone after :data:`WITHHELD_SECONDS`."""
        message = entry.body.get("message") or {}
        kept = {name: message[name] for name in WITHHELD_FIELDS if name in message}
        sealed = self._sealer.seal(json.dumps(kept, ensure_ascii=False), str(entry.update_id))
        await self.services.state.set(keys.withheld(entry.update_id), sealed, WITHHELD_SECONDS)

    async def _taken(self, chat: str) -> bool:
        """Whether a worker holds ``chat`` (its lock, see :meth:`drain`)."""
        return await self.services.state.get(keys.lock(keys.chat_lock(chat))) is not None

    # ------------------------------------------------------------------ worker
    async def drain(self, chat: str) -> int:
        """Handle the open entries of ``chat`` in order, unless another worker holds the chat; how many."""
        assert self._process is not None, "drain before start"
        handled = 0
        while True:
            try:
                lock = await self.services.state.lock(keys.chat_lock(chat), self.lock_seconds, timeout=0).__aenter__()
            except TimeoutError:
                return handled  # the holder looks again after releasing the lock (see held())
            renew = asyncio.get_running_loop().create_task(self._renew(lock))
            try:
                while batch := await self._next(chat):
                    await self._process(await self._taken_back(batch))
                    handled += len(batch)
            finally:
                renew.cancel()
                await asyncio.gather(renew, return_exceptions=True)
                await lock.__aexit__(None, None, None)
            if not await self._run(_count_open, chat):
                return handled

    async def held(self, chat: str) -> bool:
        """Whether ``chat`` has open entries while another worker holds it: the task then comes back after
        ``lock_seconds``, in case that holder died (its lock lapses by then), so a worker process killed mid-task
        delays its chat by ``chat_lock_seconds``, not by the sweep's period."""
        return bool(await self._run(_count_open, chat)) and await self._taken(chat)

    async def _renew(self, lock: Any) -> None:
        while True:
            await asyncio.sleep(self.lock_seconds / 3)
            if not await lock.extend():
                log.warning("cluster: the lock of %s lapsed while it was being handled", lock.key)

    async def _next(self, chat: str) -> list[Entry]:
        """The next batch of ``chat``: its oldest open update, or every part of the album it starts once
        :func:`album_left` says it is complete (or another message of the chat follows); [] when none is open."""
        while True:
            rows = await self._run(_open_entries, chat)
            if not rows:
                return []
            spent = [r.update_id for r in rows if r.body is None or r.attempts >= MAX_ATTEMPTS]
            if spent:
                log.warning("intake: updates %s given up after %d attempts; their users are told", spent, MAX_ATTEMPTS)
                await self._run(_give_up, [r for r in rows if r.update_id in spent], self._tell_given_up)
                self.services.outbox.wake()
                continue
            entries = [self._entry(r) for r in rows if r.body is not None]
            head = entries[0]
            batch = [head] if head.group is None else [e for e in entries if e.group == head.group]
            if head.group is not None and len(batch) == len(entries) and not self._stopping:
                left = album_left([e.received for e in batch], self.clock(), self.album_wait, self.album_max_wait)
                if left > 0:
                    await asyncio.sleep(min(0.2, left))
                    continue
            await self._run(_attempt, [e.update_id for e in batch])
            return batch

    def _entry(self, row: _Open) -> Entry:
        assert row.body is not None
        return Entry.of(self.codec.key, row.update_id, json.loads(row.body), row.attempts, row.received)

    async def _taken_back(self, batch: list[Entry]) -> list[Entry]:
        """The batch with each withheld text back from Redis (deleted as it is read); one that is gone (expired)
        stays withheld: the user is asked to send it again."""
        for entry in batch:
            if entry.body.pop(WITHHELD, None):
                sealed = await self.services.state.delete(keys.withheld(entry.update_id))
                kept = self._sealer.open(sealed, str(entry.update_id)) if isinstance(sealed, str) else None
                if kept is None and sealed is not None:
                    log.warning("cluster: a withheld text could not be opened (another bot token?); asking again")
                if kept is not None and isinstance(entry.body.get("message"), dict):
                    entry.body["message"].update(json.loads(kept))
                    log.info("cluster: update %s: its withheld text came from the front end", entry.update_id)
                else:
                    entry.body[WITHHELD] = True
        return batch

    async def sweep(self) -> int:
        """Send a task again for each chat whose entries waited longer than ``sweep_seconds`` while no worker
        holds it (a front end killed between journaling and sending, a broker that lost the task); how many.

        A task is sent, not handled here, so a worker process still runs one chat at a time, in queue order."""
        chats = await self._run(_stale_chats, self.sweep_seconds)
        sent = 0
        for chat in chats:
            if not await self._taken(chat):
                await self.services.run_blocking(self.send_task, chat)
                sent += 1
        if sent:
            log.info("cluster: tasks sent again for %d chats whose updates were left waiting", sent)
        return sent


# -- the journal's cluster queries (the intake tables of core.pipeline.intake) -----------------------------------------
def _open_entries(db: Connection, now: float, chat: str, limit: int = 50) -> list[_Open]:
    c = intake.c
    query = select(c.update_id, c.body, c.received, c.attempts).where(c.chat == chat, c.done.is_(None))
    rows = db.execute(query.order_by(c.update_id).limit(limit)).fetchall()
    return [_Open(int(r[0]), r[1], float(r[2]), int(r[3])) for r in rows]


def _attempt(db: Connection, now: float, ids: list[int]) -> None:
    db.execute(update(intake).where(intake.c.update_id.in_(ids)).values(attempts=intake.c.attempts + 1))


def _give_up(db: Connection, now: float, rows: list[_Open], tell: Callable[[Connection, int, str], None]) -> None:
    """Close ``rows`` and, in the same transaction, queue the message telling each one's user (``tell``)."""
    for row in rows:
        if row.body is not None:
            tell(db, row.update_id, row.body)
    Journal.finish(db, now, [row.update_id for row in rows])


def _count_open(db: Connection, now: float, chat: str) -> int:
    c = intake.c
    return int(db.execute(select(func.count()).where(c.chat == chat, c.done.is_(None))).scalar_one())


def _stale_chats(db: Connection, now: float, age: float) -> list[str]:
    c = intake.c
    rows = db.execute(select(c.chat).where(c.done.is_(None), c.received < now - age).distinct()).fetchall()
    return [r[0] for r in rows if r[0] is not None]


def task_sender(app: Any, queue: str) -> Callable[[str], None]:
    """What a cluster process sends tasks with through the Celery ``app`` (blocking: call it in the I/O pool)."""

    def send(chat: str) -> None:
        app.send_task(CHAT_TASK, args=[chat], queue=queue)

    return send
