"""The outbox: messages that must arrive (verification results, admin alerts, answers to slow jobs).

``await services.outbox.put(chat_id, Reply(text, buttons), key="realname:<session id>")`` writes the message
to the ``outbox`` table of the bot's database **before** sending it, tries to send it at once, and marks
it delivered only when the transport (Telegram) accepted it. A message that could not be sent is retried
by a background task with a growing pause (``outbox.backoff`` seconds, doubled each time, at most
``outbox.max_backoff``), across restarts: a restart makes every queued message due at once. Each ``key``
is delivered at most once (a second ``put`` with a known key does nothing), so a job that runs again after
a crash can simply put its message again.

Only text and buttons are stored (a reply with a photo or a document is refused), and the text is erased
as soon as the message is delivered or given up; the key, the chat id and the outcome stay for
``outbox.keep_days`` for deduplication. Failures a retry cannot fix (Telegram's ``Bad Request``, the user
blocked the bot) are given up at once and logged, as is a message still not delivered after
``outbox.max_attempts`` tries.

**Leases and who holds them.** A sender leases a message while it sends it (``lease``: until when; ``owner``: which
process, ``host:pid:random``), so two processes sharing a database never send one message at once. A lease
ends when its sender marks the outcome, at the latest after :data:`LEASE` seconds — but a process killed mid-send
does not wait that long for a replacement (:mod:`core.sending.leases`):

- **one process** (no ``cluster.redis_url``): nobody else sends from this database, so at start every lease is
  taken over at once;
- **cluster mode** (``cluster.redis_url``): every outbox beats a heartbeat key ``outbox:owner:<owner>`` in the
  shared state every :data:`~core.sending.leases.HEARTBEAT` seconds (it lapses after three beats missed); a lease
  whose owner has no heartbeat — or names this host and a pid that no longer runs — is taken over, at start and
  at each pass of the background sender; a live owner's lease is respected.

**The one window left, and what marks it.** Before each try the row gets ``sending`` (the time the send began);
the outcome clears it. A row found with ``sending`` set after its sender died may have reached Telegram: the Bot
API has no idempotency key and no way to read a chat's messages back, so the replacement cannot tell and sends it
again, logging "may be a duplicate". A duplicate therefore needs a kill between Telegram's acceptance and the
mark: the whole send round trip (the request, Telegram's work, the answer; typically 0.1–0.5 s, up to
``telegram.request_timeout`` and its retries on a bad network), not "a few milliseconds".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
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
    case,
    delete,
    func,
    select,
    text,
    update,
)

from core.contract.chat import Button, Reply
from core.infra.store import insert_into
from core.sending.leases import Leases

log = logging.getLogger(__name__)

QUEUED, DELIVERED, FAILED = "queued", "delivered", "failed"
#: Seconds a sender holds a message it is sending; another sender may take it over after that.
LEASE = 60.0
#: Errors (by class name, anywhere in the class hierarchy) that a retry cannot fix.
PERMANENT = frozenset({"BadRequest", "Forbidden", "InvalidToken"})
#: How often delivered and given-up messages past ``keep_days`` are deleted.
PRUNE_EVERY = 3600.0

metadata = MetaData()
outbox = Table(
    "outbox",
    metadata,
    Column("key", Text, primary_key=True),
    Column("chat_id", BigInteger, nullable=False),
    Column("reply", Text),
    Column("state", Text, nullable=False, server_default=text("'queued'")),
    Column("created", Double, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_at", Double, nullable=False),
    Column("lease", Double, nullable=False, server_default=text("0")),
    Column("finished", Double),
    Column("message_id", BigInteger),
    Column("error", Text),
    Column("owner", Text),  # the sender holding the lease (core.sending.leases.owner_id)
    Column("sending", Double),  # when the current try began: set, after its sender died, means "may have arrived"
    Index("outbox_due", "state", "next_at"),
)
_c = outbox.c


def _by_key(key: str) -> Any:
    """``UPDATE outbox … WHERE key = key``."""
    return update(outbox).where(_c.key == key)


def dump_reply(reply: Reply) -> str:
    """A text-and-buttons reply as JSON; a photo or a document is refused (no bytes in the database)."""
    import json

    if reply.photo is not None or reply.document is not None:
        raise ValueError("the outbox keeps text and buttons only, not photos or documents")
    rows = [[{k: v for k, v in vars(b).items() if v is not None} for b in row] for row in reply.buttons]
    return json.dumps({"text": reply.text, "buttons": rows}, ensure_ascii=False)


def load_reply(text: str) -> Reply:
    import json

    value = json.loads(text)
    return Reply(value["text"], [[Button(**b) for b in row] for row in value["buttons"]])


def permanent(err: BaseException | None) -> bool:
    """Whether retrying cannot help (Telegram refused the message itself, or the chat is closed to the bot),
    also when the refusal comes wrapped (``core.sending.sender.DeliveryFailed`` raised from it)."""
    while err is not None:
        if any(cls.__name__ in PERMANENT for cls in type(err).__mro__):
            return True
        err = err.__cause__
    return False


class Outbox:
    """Messages that must arrive, in the ``outbox`` table of ``services.store``; see the module docstring."""

    def __init__(self, services: Any, clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.clock = clock
        config = services.config["outbox"]
        self.backoff: float = config["backoff"]
        self.max_backoff: float = config["max_backoff"]
        self.max_attempts: int = config["max_attempts"]
        self.keep: float = config["keep_days"] * 86400
        services.store.create(outbox)  # at assembly, like the store's own tables
        services.store.names_chats(_c.chat_id)  # /forget deletes a user's queued and delivered messages
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending: set[str] = set()
        cluster = services.config.get("cluster") or {}
        self.leases = Leases(self, outbox, queued=QUEUED, shared=bool(cluster.get("redis_url")))
        self.owner = self.leases.owner

    async def _db(self, fn: Callable[[Connection], Any]) -> Any:
        return await self.services.run_db(self.services.store.transaction, fn)

    # ------------------------------------------------------------------ the API
    async def put(self, chat_id: int, reply: Reply, *, key: str) -> bool:
        """Queue ``reply`` for ``chat_id`` under ``key`` and try to send it now; False when ``key`` was
        already queued or delivered (then nothing happens). Returns once the message is stored (and, when
        the transport accepted it at once, delivered); never raises for a failed send."""
        await self.leases.alive()  # cluster mode: the heartbeat stands before the lease does
        if not await self._db(lambda db: self._insert(db, chat_id, reply, key, lease=LEASE)):
            log.info("outbox: %s was queued before; not again", key)
            return False
        self._sending.add(key)
        if self.services.transport is None:
            await self._release(key)
        else:
            await self._attempt(key, chat_id, reply, 0)
        return True

    def put_in(self, db: Connection, chat_id: int, reply: Reply, *, key: str) -> bool:
        """Queue ``reply`` inside the caller's own transaction (``services.store.transaction``), so the
        message and the caller's records are written together or not at all; False for a known ``key``.
        Call :meth:`wake` after the commit: the background sender sends it at once."""
        return self._insert(db, chat_id, reply, key, lease=0.0)

    def wake(self) -> None:
        """Make the background sender look for due messages now."""
        if self._wake is not None:
            self._wake.set()

    def _insert(self, db: Connection, chat_id: int, reply: Reply, key: str, *, lease: float) -> bool:
        now = self.clock()
        values = {"key": key, "chat_id": chat_id, "reply": dump_reply(reply), "created": now, "next_at": now}
        owner = self.owner if lease else None
        stmt = insert_into(db, outbox).values(**values, lease=now + lease if lease else 0.0, owner=owner)
        return bool(db.execute(stmt.on_conflict_do_nothing(index_elements=["key"])).rowcount)

    async def state(self, key: str) -> str | None:
        """``queued``, ``delivered`` or ``failed``; None for a key never put (or forgotten)."""
        rows = await self._db(lambda db: db.execute(select(_c.state).where(_c.key == key)).fetchall())
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ sending
    async def _attempt(self, key: str, chat_id: int, reply: Reply, attempts: int) -> bool:
        """One try (the message is leased to this sender); records the outcome."""
        await self.leases.mark_sending(key)
        try:
            message_id = await self.services.transport.send(chat_id, reply)
        except asyncio.CancelledError:
            raise  # still leased: stop() releases it
        except Exception as err:
            self._sending.discard(key)
            await self._failed(key, chat_id, attempts + 1, err)
            return False
        self._sending.discard(key)
        await self._delivered(key, message_id)
        return True

    async def _delivered(self, key: str, message_id: int | None) -> None:
        now = self.clock()
        values = {"state": DELIVERED, "reply": None, "finished": now, "message_id": message_id, "lease": 0.0}
        values.update(owner=None, sending=None)
        await self._db(lambda db: db.execute(_by_key(key).values(**values, attempts=_c.attempts + 1)))

    async def _failed(self, key: str, chat_id: int, attempts: int, err: BaseException) -> None:
        now, reason = self.clock(), f"{type(err).__name__}: {err}"[:200]
        if permanent(err) or attempts >= self.max_attempts:
            log.warning("outbox: giving up %s for chat %s after %d tries: %s", key, chat_id, attempts, reason)
            values = {"state": FAILED, "reply": None, "finished": now, "attempts": attempts, "error": reason}
            await self._db(lambda db: db.execute(_by_key(key).values(**values, lease=0.0, owner=None, sending=None)))
            return
        delay = min(self.max_backoff, self.backoff * 2 ** (attempts - 1))
        retry_after = getattr(err, "retry_after", None)  # Telegram's flood control says how long to wait
        if hasattr(retry_after, "total_seconds"):
            retry_after = retry_after.total_seconds()
        if isinstance(retry_after, (int, float)):
            delay = max(delay, float(retry_after))
        log.info("outbox: %s for chat %s not sent (%s); try %d in %.1f s", key, chat_id, reason, attempts + 1, delay)
        values = {"attempts": attempts, "next_at": now + delay, "error": reason, "lease": 0.0, "owner": None}
        values["sending"] = None
        await self._db(lambda db: db.execute(_by_key(key).values(**values)))
        if self._wake is not None:
            self._wake.set()

    async def _release(self, key: str) -> None:
        self._sending.discard(key)
        await self._db(lambda db: db.execute(_by_key(key).values(lease=0.0, owner=None, sending=None)))

    async def _claim_due(self, limit: int = 20) -> list[tuple[str, int, str, int]]:
        """Lease up to ``limit`` due messages, oldest first.

        Several processes may send from one database (PostgreSQL): each candidate is taken by a conditional
        ``UPDATE … WHERE lease < now`` and kept only when that changed its row, so one message goes to one
        sender; on PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED`` (what another sender is
        claiming right now is skipped, not waited for; SQLite has no such clause and needs none)."""
        now = self.clock()
        due = (_c.state == QUEUED) & (_c.next_at <= now) & (_c.lease < now)

        def claim(db: Connection) -> list[tuple[str, int, str, int]]:
            query = select(_c.key, _c.chat_id, _c.reply, _c.attempts, _c.sending).where(due)
            rows = db.execute(query.order_by(_c.created).limit(limit).with_for_update(skip_locked=True)).fetchall()
            taken = []
            for row in rows:
                lease = {"lease": now + LEASE, "owner": self.owner}
                if db.execute(update(outbox).where(_c.key == row[0], due).values(**lease)).rowcount == 1:
                    taken.append((row[0], row[1], row[2], row[3]))
                    if row[4] is not None:
                        log.warning(
                            "outbox: %s was being sent when its sender died; sent again (may be a duplicate)", row[0]
                        )
            return taken

        return await self._db(claim)

    async def _next_due(self) -> float | None:
        soonest = func.min(case((_c.next_at > _c.lease, _c.next_at), else_=_c.lease))
        rows = await self._db(lambda db: db.execute(select(soonest).where(_c.state == QUEUED)).fetchall())
        return rows[0][0]

    async def drain(self) -> int:
        """Send every message that is due now (the background task calls this); how many were delivered."""
        delivered = 0
        while True:
            await self.leases.alive()
            due = await self._claim_due()
            if not due:
                return delivered
            for key, chat_id, body, attempts in due:
                self._sending.add(key)
                delivered += await self._attempt(key, chat_id, load_reply(body), attempts)

    # ------------------------------------------------------------------ the background task
    def start(self) -> None:
        """Start the background sender in the running event loop (at bot start; a restart resumes the
        queue: every queued message is due at once)."""
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a script): put() still stores and sends; nothing retries
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="aipbot-outbox")

    async def _run(self) -> None:
        now = self.clock()
        await self._db(
            lambda db: db.execute(update(outbox).where(_c.state == QUEUED, _c.next_at > now).values(next_at=now))
        )
        pruned_at = 0.0
        with contextlib.suppress(Exception):  # a failure is logged by the pass below, which tries again
            await self.leases.take_over(at_start=True)
        while True:
            try:
                await self.leases.beat()
                if self.clock() - pruned_at >= PRUNE_EVERY:
                    pruned_at = self.clock()
                    await self._prune()
                await self.drain()
                next_due = await self._next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox: sending failed; again in 5 s")
                next_due = self.clock() + 5
            wait = 30.0 if next_due is None else min(30.0, max(0.01, next_due - self.clock()))
            wait = min(wait, self.leases.every)  # the heartbeat and the look for dead senders' leases
            assert self._wake is not None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _prune(self) -> int:
        cutoff = self.clock() - self.keep
        return await self._db(
            lambda db: db.execute(delete(outbox).where(_c.state != QUEUED, _c.finished < cutoff)).rowcount
        )

    async def stop(self) -> None:
        """Stop the background sender; messages being sent stay queued (released for the next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for key in list(self._sending):
            with contextlib.suppress(Exception):
                await self._release(key)
        with contextlib.suppress(Exception):
            await self.leases.end()

    def close(self) -> None:
        """At shutdown without a loop to wait in: cancel the background sender."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
