"""Verified-only groups (``plugins.realname.gate_chats``): a request to join one of them is approved once its user
has passed ``/verify`` (now, or within ``retention_days`` before), and declined when the user fails or does not
finish within ``gate_minutes``. See docs/realname.md, "Verified-only groups".

The bot must be an administrator of each group with the right to invite users (Telegram then sends it the
``chat_join_request`` of every invite link that "requires approval"). On a request it writes to the user privately
(``user_chat_id``: Telegram lets it for 5 minutes) with the ``/verify`` prompt.

**Exactly once.** One row per (group, user) in ``realname_gate``. Answering is a conditional ``UPDATE`` out of
``pending`` (to ``approving`` or ``declining``) judged by its row count — in one process or in a cluster sharing the
database, exactly one caller wins — then the Bot API call, then the mark (``approved`` / ``declined``). A process
killed between the decision and the mark leaves the row ``approving``: the job calls again after
:data:`STUCK_AFTER` seconds, claiming the retry by another conditional update; Telegram answers a request that is
already answered with ``HIDE_REQUESTER_MISSING``, so the user is approved once.

Nothing personal is stored: Telegram ids, the reply language, states and times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, Double, Index, MetaData, Table, Text, and_, delete, select, update

from core.contract.chat import Button, Context, JoinRequest
from plugins.realname.sessions import PASSED
from plugins.realname.sessions import sessions as sessions_table

if TYPE_CHECKING:
    from plugins.realname.flow import Verifier

log = logging.getLogger(__name__)

PENDING, APPROVING, DECLINING, APPROVED, DECLINED = "pending", "approving", "declining", "approved", "declined"
#: A decision not marked answered this long after it was made: its process died; the job calls again.
STUCK_AFTER = 60.0

metadata = MetaData()
gate = Table(
    "realname_gate",
    metadata,
    Column("chat_id", BigInteger, primary_key=True),
    Column("user_id", BigInteger, primary_key=True),
    Column("lang", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("requested_at", Double, nullable=False),
    Column("decided_at", Double),
    Column("answered_at", Double),
    Index("realname_gate_state", "state", "requested_at"),
)
_g = gate.c


@dataclass(frozen=True)
class Request:
    """One join request as stored."""

    chat_id: int
    user_id: int
    lang: str
    state: str
    requested_at: float
    decided_at: float | None = None
    answered_at: float | None = None


class GateStore:
    """The ``realname_gate`` table (blocking: call through ``services.run_db``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.create(gate)

    def _changed(self, statement: Any) -> int:
        return int(self.store.transaction(lambda db: db.execute(statement).rowcount))

    def request(self, chat_id: int, user_id: int, lang: str, now: float) -> bool:
        """Record a request (a new one after an answered one starts over); False when one is already open."""
        values = {"chat_id": chat_id, "user_id": user_id, "lang": lang, "state": PENDING, "requested_at": now}
        again = {"state": PENDING, "requested_at": now, "lang": lang, "decided_at": None, "answered_at": None}
        statement = (
            self.store.insert(gate)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["chat_id", "user_id"], set_=again, where=_g.state.in_((APPROVED, DECLINED))
            )
        )
        return self._changed(statement) == 1

    def decide(self, chat_id: int, user_id: int, state: str, now: float) -> bool:
        """pending → ``state`` (approving or declining); True for the one caller that changed it."""
        where = and_(_g.chat_id == chat_id, _g.user_id == user_id, _g.state == PENDING)
        return self._changed(update(gate).where(where).values(state=state, decided_at=now)) == 1

    def claim_retry(self, row: Request, now: float) -> bool:
        """Take over a stuck decision (its process died before the mark); True for the one caller that did."""
        where = and_(
            _g.chat_id == row.chat_id, _g.user_id == row.user_id, _g.state == row.state, _g.decided_at == row.decided_at
        )
        return self._changed(update(gate).where(where).values(decided_at=now)) == 1

    def answered(self, chat_id: int, user_id: int, state: str, now: float) -> None:
        """approving/declining → approved/declined."""
        where = and_(_g.chat_id == chat_id, _g.user_id == user_id, _g.state.in_((APPROVING, DECLINING)))
        self.store.execute(update(gate).where(where).values(state=state, answered_at=now))

    def open_of(self, user_id: int) -> list[Request]:
        """The user's requests still waiting for a decision."""
        rows = self.store.execute(select(*gate.columns).where(_g.user_id == user_id, _g.state == PENDING))
        return [Request(*row) for row in rows]

    def expired(self, before: float) -> list[Request]:
        """Requests pending since before ``before``."""
        query = select(*gate.columns).where(_g.state == PENDING, _g.requested_at < before)
        return [Request(*row) for row in self.store.execute(query)]

    def stuck(self, before: float) -> list[Request]:
        """Decisions made before ``before`` and never marked answered."""
        query = select(*gate.columns).where(_g.state.in_((APPROVING, DECLINING)), _g.decided_at < before)
        return [Request(*row) for row in self.store.execute(query)]

    def forget(self, user_id: int) -> None:
        """Delete the user's requests (``/forget``), leaving no copy in the database files."""
        self.store.forget_user(user_id, tables=(gate,))

    def purge(self, before: float) -> int:
        """Delete answered requests older than ``before``."""
        old = _g.state.in_((APPROVED, DECLINED)) & (_g.requested_at < before)
        return self._changed(delete(gate).where(old))

    def passed_since(self, user_id: int, since: float) -> bool:
        """Whether ``user_id`` has a verification that passed at or after ``since``."""
        c = sessions_table.c
        query = select(c.id).where(c.user_id == user_id, c.state == PASSED, c.finished_at >= since).limit(1)
        return bool(self.store.execute(query))


class Gate:
    """The verified-only groups of one bot's :class:`~plugins.realname.flow.Verifier`."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.config = verifier.config
        self.services = verifier.services
        self.clock: Callable[[], float] = verifier.clock
        self.chats = frozenset(int(c) for c in self.config["gate_chats"])
        self.store = GateStore(self.services.store)

    async def on_join_request(self, ctx: Context, request: JoinRequest) -> None:
        """A user asked to join: approve at once when they passed within ``retention_days``, else the prompt."""
        if request.chat_id not in self.chats:
            log.info("realname: a join request for chat %s, which is not in gate_chats: left alone", request.chat_id)
            return
        db, now = self.services.run_db, self.clock()
        opened = await db(self.store.request, request.chat_id, ctx.user.id, ctx.lang, now)
        since = now - self.config["retention_days"] * 86400
        if await db(self.store.passed_since, ctx.user.id, since):
            log.info("realname: user %s asked to join %s and is verified: approving", ctx.user.id, request.chat_id)
            await self.answer(request.chat_id, ctx.user.id, approve=True)
            await ctx.reply(ctx.t("realname.gate.welcome", title=request.title))
            return
        if not opened:  # a repeated request while one is open: the prompt was sent already
            log.info("realname: user %s asked again to join %s", ctx.user.id, request.chat_id)
        button = Button(ctx.t("realname.gate.button"), url=ctx.deep_link("go"))
        text = ctx.t("realname.gate.prompt", title=request.title, minutes=int(self.config["gate_minutes"]))
        await ctx.reply(text, buttons=[[button]])

    async def after_verdict(self, user_id: int, passed: bool) -> None:
        """A verification of ``user_id`` ended: answer the user's open requests (approve when it passed)."""
        for row in await self.services.run_db(self.store.open_of, user_id):
            await self.answer(row.chat_id, user_id, approve=passed)

    async def answer(self, chat_id: int, user_id: int, *, approve: bool) -> None:
        """Decide once (a conditional update), then ask Telegram, then mark it (a failure is retried by the job)."""
        db = self.services.run_db
        if not await db(self.store.decide, chat_id, user_id, APPROVING if approve else DECLINING, self.clock()):
            return  # someone else decided it
        await self._call(chat_id, user_id, approve)

    async def _call(self, chat_id: int, user_id: int, approve: bool) -> None:
        transport = getattr(self.services, "transport", None)
        answer = getattr(transport, "answer_join_request", None)
        if answer is None:
            log.warning("realname: this transport cannot answer join requests (chat %s)", chat_id)
            return
        if await answer(chat_id, user_id, approve):
            state = APPROVED if approve else DECLINED
            await self.services.run_db(self.store.answered, chat_id, user_id, state, self.clock())
            log.info("realname: join request of user %s for %s %s", user_id, chat_id, state)

    async def poll(self) -> None:
        """The job's part: decline requests past ``gate_minutes``, call again for decisions a crash cut off, purge."""
        db, now = self.services.run_db, self.clock()
        for row in await db(self.store.expired, now - self.config["gate_minutes"] * 60):
            log.info("realname: user %s did not verify in time for %s: declining", row.user_id, row.chat_id)
            await self.answer(row.chat_id, row.user_id, approve=False)
        for row in await db(self.store.stuck, now - STUCK_AFTER):
            if await db(self.store.claim_retry, row, now):
                await self._call(row.chat_id, row.user_id, row.state == APPROVING)
        await db(self.store.purge, now - self.config["retention_days"] * 86400)
