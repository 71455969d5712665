"""Verification sessions in the bot's database (``core.infra.store.Store``): what survives a restart, nothing personal.

One row per ``/verify``: a random session id (the deep-link payload), the Telegram user and chat, the reply
language, the provider and its opaque reference (Baidu ``verify_token``), the state, the three scores,
timestamps and the return page's own random reference (``return_ref``, another 192 random bits).
Never a name, an ID number, an image or base64.

States: ``pending`` → ``passed`` | ``failed`` (a result appeared) | ``expired`` (the window ended without
one) | ``replaced`` (a second ``/verify`` started a new one). Transitions out of ``pending`` are
conditional updates judged by their row count, so when the poller and the user ask at the same moment —
in one process or in two sharing a PostgreSQL database — exactly one of them wins (and only the winner
notifies the user).

Every method is blocking (call through ``services.run_db``: the store's own thread). Times are Unix seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import astuple, dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    MetaData,
    Select,
    Table,
    Text,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)

PENDING, PASSED, FAILED, EXPIRED, REPLACED = "pending", "passed", "failed", "expired", "replaced"
FINISHED = (PASSED, FAILED)
#: The return page (``aipbot_web_routes``); ``{ref}`` is a session's ``return_ref``.
RETURN_PATH = "/verify/return/{ref}"
#: ``secrets.token_urlsafe(24)``: 32 characters of ``[A-Za-z0-9_-]`` (192 random bits).
ID_LENGTH = 32

metadata = MetaData()
#: The sessions (``return_ref`` was added after the first release: ``Store.create`` adds it to older databases).
sessions = Table(
    "realname_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("chat_id", BigInteger, nullable=False),
    Column("lang", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("score", Double),
    Column("liveness", Double),
    Column("spoofing", Double),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("checked_at", Double),
    Column("finished_at", Double),
    Column("notified_at", Double),
    Column("return_ref", Text),
    Index("realname_sessions_user", "user_id", "created_at"),
    Index("realname_sessions_state", "state", "expires_at"),
)
_c = sessions.c
Index(
    "realname_sessions_return",
    _c.return_ref,
    unique=True,
    sqlite_where=_c.return_ref.is_not(None),
    postgresql_where=_c.return_ref.is_not(None),
)
#: Every column, in the order of :class:`Session`'s fields.
_COLUMNS = tuple(sessions.columns)


def new_id() -> str:
    """A fresh unguessable session id, usable as a deep-link payload."""
    return secrets.token_urlsafe(24)


def looks_like_id(text: str) -> bool:
    """Whether ``text`` has the shape of a session id (checked before touching the database)."""
    return len(text) == ID_LENGTH and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


@dataclass(frozen=True)
class Session:
    """One verification session as stored."""

    id: str
    user_id: int
    chat_id: int
    lang: str
    provider: str
    reference: str
    state: str
    score: float | None
    liveness: float | None
    spoofing: float | None
    created_at: float
    expires_at: float
    checked_at: float | None = None
    finished_at: float | None = None
    notified_at: float | None = None
    #: The opaque reference of the return page (``/verify/return/<ref>``): random, bound to this session only.
    return_ref: str | None = None

    def __repr__(self) -> str:  # the id is the owner's link: show only its start; never the reference
        return f"Session({self.id[:6]}…, user={self.user_id}, {self.state})"


class SessionStore:
    """The ``realname_sessions`` table of the bot's database (SQLite or PostgreSQL)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.create(sessions)  # creates the table, or adds what an older version lacked (return_ref, its index)
        # newest first; equal times (a frozen test clock) in insertion order: SQLite's rowid, else the id
        self._newest = [_c.created_at.desc(), literal_column("rowid").desc() if store.dialect == "sqlite" else _c.id]

    def _one(self, query: Select[Any]) -> Session | None:
        rows = self.store.execute(query.limit(1))
        return Session(*rows[0]) if rows else None

    def _changed(self, statement: Any) -> int:
        """Rows ``statement`` changed (in its own transaction): a conditional ``UPDATE`` wins once."""
        return int(self.store.transaction(lambda db: db.execute(statement).rowcount))

    def create(self, session: Session) -> None:
        """Insert a new session."""
        self.store.execute(
            insert(sessions).values(dict(zip([c.name for c in _COLUMNS], astuple(session), strict=True)))
        )

    def get(self, session_id: str) -> Session | None:
        """The session with this id, or None."""
        return self._one(select(*_COLUMNS).where(_c.id == session_id))

    def by_return_ref(self, ref: str) -> Session | None:
        """The session whose return page is ``ref``, or None."""
        return self._one(select(*_COLUMNS).where(_c.return_ref == ref))

    def latest(self, user_id: int) -> Session | None:
        """The user's most recent session."""
        return self._one(select(*_COLUMNS).where(_c.user_id == user_id).order_by(*self._newest))

    def pending_of(self, user_id: int) -> Session | None:
        """The user's newest pending session."""
        return self._one(select(*_COLUMNS).where(_c.user_id == user_id, _c.state == PENDING).order_by(*self._newest))

    def pending(self, limit: int = 500) -> list[Session]:
        """Pending sessions, least recently checked first."""
        order = (func.coalesce(_c.checked_at, 0), _c.created_at)
        rows = self.store.execute(select(*_COLUMNS).where(_c.state == PENDING).order_by(*order).limit(limit))
        return [Session(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many sessions there are in each state (for ``/metrics``)."""
        rows = self.store.execute(select(_c.state, func.count()).group_by(_c.state))
        return {state: 0 for state in (PENDING, PASSED, FAILED, EXPIRED, REPLACED)} | {s: int(n) for s, n in rows}

    def recent(self, limit: int = 10) -> list[Session]:
        """The newest sessions of everyone (admins' overview)."""
        rows = self.store.execute(select(*_COLUMNS).order_by(*self._newest).limit(limit))
        return [Session(*row) for row in rows]

    def finish(
        self,
        session_id: str,
        state: str,
        score: float | None,
        liveness: float | None,
        spoofing: float | None,
        now: float,
        answered: bool = False,
    ) -> bool:
        """pending (or replaced) → ``state`` with the scores; False when it was already finished or expired.

        A replaced session may still finish: its user can complete the old page and come back by its link.
        ``answered``: the user is being told in the chat right now (else the outbox tells them: see
        :func:`plugins.realname.job.notify`, which marks ``notified_at``). One conditional ``UPDATE``: when
        two processes finish a session at once, exactly one of them changes the row (PostgreSQL re-checks
        the ``WHERE`` after waiting for the other's row lock).
        """
        values = {"state": state, "score": score, "liveness": liveness, "spoofing": spoofing}
        told = now if answered else None
        statement = (
            update(sessions)
            .where(_c.id == session_id, _c.state.in_((PENDING, REPLACED)))
            .values(**values, finished_at=now, checked_at=now, notified_at=told)
        )
        return self._changed(statement) == 1

    def notified(self, session_id: str, now: float) -> None:
        """The user's notice of how ``session_id`` ended is in the outbox (it arrives once)."""
        self.store.execute(update(sessions).where(_c.id == session_id).values(notified_at=now))

    def unnotified(self, before: float) -> list[Session]:
        """Sessions that ended (passed, failed, expired) before ``before`` whose user was never told: a restart
        came between the decision and the notice."""
        ended = _c.state.in_((PASSED, FAILED, EXPIRED)) & _c.notified_at.is_(None) & (_c.finished_at < before)
        return [Session(*row) for row in self.store.execute(select(*_COLUMNS).where(ended))]

    def close(self, session_id: str, state: str, now: float, answered: bool = False) -> bool:
        """pending → ``expired`` or ``replaced``; False when the session was no longer pending. A replaced
        session needs no notice; ``answered`` as for :meth:`finish`."""
        told = now if answered or state == REPLACED else None
        statement = (
            update(sessions)
            .where(_c.id == session_id, _c.state == PENDING)
            .values(state=state, finished_at=now, checked_at=now, notified_at=told)
        )
        return self._changed(statement) == 1

    def checked(self, session_id: str, now: float) -> None:
        """Remember when a pending session was last asked about."""
        self.store.execute(update(sessions).where(_c.id == session_id).values(checked_at=now))

    def forget(self, user_id: int) -> int:
        """Delete every session of ``user_id`` — and the user's quota rows, and the rows naming the user's chats
        (the outbox's messages to them) — leaving no copy in the database files (``Store.forget_user``); returns
        how many sessions."""
        rows = self.store.execute(select(_c.id, _c.chat_id).where(_c.user_id == user_id))
        self.store.forget_user(user_id, tables=(sessions,), chats=tuple({row[1] for row in rows}))
        return len(rows)

    def purge(self, before: float) -> int:
        """Delete sessions no longer pending whose last change is older than ``before``; returns how many."""
        old = (_c.state != PENDING) & (func.coalesce(_c.finished_at, _c.created_at) < before)
        return self._changed(delete(sessions).where(old))
