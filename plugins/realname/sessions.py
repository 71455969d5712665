"""Verification sessions in SQLite (``core.store.Store``): what survives a restart, and nothing personal.

One row per ``/verify``: a random session id (the deep-link payload), the Telegram user and chat, the reply
language, the provider and its opaque reference (Baidu ``verify_token``), the state, the three scores,
timestamps and the return page's own random reference (``return_ref``, another 192 random bits).
Never a name, an ID number, an image or base64.

States: ``pending`` → ``passed`` | ``failed`` (a result appeared) | ``expired`` (the window ended without
one) | ``replaced`` (a second ``/verify`` started a new one). Transitions out of ``pending`` are
conditional updates, so when the poller and the user ask at the same moment exactly one of them wins
(and only the winner notifies the user).

Every method is blocking (call through ``services.run_db``: the store's own thread). Times are Unix seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import astuple, dataclass
from typing import Any

PENDING, PASSED, FAILED, EXPIRED, REPLACED = "pending", "passed", "failed", "expired", "replaced"
FINISHED = (PASSED, FAILED)
#: The return page (``aipbot_web_routes``); ``{ref}`` is a session's ``return_ref``.
RETURN_PATH = "/verify/return/{ref}"
#: ``secrets.token_urlsafe(24)``: 32 characters of ``[A-Za-z0-9_-]`` (192 random bits).
ID_LENGTH = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS realname_sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    lang TEXT NOT NULL,
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    state TEXT NOT NULL,
    score REAL,
    liveness REAL,
    spoofing REAL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    checked_at REAL,
    finished_at REAL,
    notified_at REAL,
    return_ref TEXT
);
CREATE INDEX IF NOT EXISTS realname_sessions_user ON realname_sessions(user_id, created_at);
CREATE INDEX IF NOT EXISTS realname_sessions_state ON realname_sessions(state, expires_at);
"""
#: Added after the first release: a database made before gets the column (and its index) at start-up.
RETURN_REF_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS realname_sessions_return ON realname_sessions(return_ref)"
    " WHERE return_ref IS NOT NULL"
)

_COLUMNS = (
    "id, user_id, chat_id, lang, provider, reference, state, score, liveness, spoofing,"
    " created_at, expires_at, checked_at, finished_at, notified_at, return_ref"
)


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
    """The ``realname_sessions`` table of the bot's database."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.executescript(SCHEMA)
        columns = {row[1] for row in store.execute("PRAGMA table_info(realname_sessions)")}
        if "return_ref" not in columns:
            store.execute("ALTER TABLE realname_sessions ADD COLUMN return_ref TEXT")
        store.execute(RETURN_REF_INDEX)

    def _one(self, sql: str, params: tuple[Any, ...]) -> Session | None:
        rows = self.store.execute(sql, params)
        return Session(*rows[0]) if rows else None

    def create(self, session: Session) -> None:
        """Insert a new session."""
        marks = ", ".join("?" * len(_COLUMNS.split(",")))
        self.store.execute(f"INSERT INTO realname_sessions ({_COLUMNS}) VALUES ({marks})", astuple(session))

    def get(self, session_id: str) -> Session | None:
        """The session with this id, or None."""
        return self._one(f"SELECT {_COLUMNS} FROM realname_sessions WHERE id = ?", (session_id,))

    def by_return_ref(self, ref: str) -> Session | None:
        """The session whose return page is ``ref``, or None."""
        return self._one(f"SELECT {_COLUMNS} FROM realname_sessions WHERE return_ref = ?", (ref,))

    def latest(self, user_id: int) -> Session | None:
        """The user's most recent session."""
        return self._one(
            f"SELECT {_COLUMNS} FROM realname_sessions WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (user_id,),
        )

    def pending_of(self, user_id: int) -> Session | None:
        """The user's newest pending session."""
        return self._one(
            f"SELECT {_COLUMNS} FROM realname_sessions WHERE user_id = ? AND state = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (user_id, PENDING),
        )

    def pending(self, limit: int = 500) -> list[Session]:
        """Pending sessions, least recently checked first."""
        rows = self.store.execute(
            f"SELECT {_COLUMNS} FROM realname_sessions WHERE state = ? ORDER BY COALESCE(checked_at, 0), created_at"
            " LIMIT ?",
            (PENDING, limit),
        )
        return [Session(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many sessions there are in each state (for ``/metrics``)."""
        rows = self.store.execute("SELECT state, COUNT(*) FROM realname_sessions GROUP BY state")
        return {state: 0 for state in (PENDING, PASSED, FAILED, EXPIRED, REPLACED)} | dict(rows)

    def recent(self, limit: int = 10) -> list[Session]:
        """The newest sessions of everyone (admins' overview)."""
        rows = self.store.execute(
            f"SELECT {_COLUMNS} FROM realname_sessions ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
        )
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
        :func:`plugins.realname.job.notify`, which marks ``notified_at``).
        """
        rows = self.store.execute(
            "UPDATE realname_sessions SET state = ?, score = ?, liveness = ?, spoofing = ?, finished_at = ?,"
            " checked_at = ?, notified_at = ? WHERE id = ? AND state IN (?, ?) RETURNING id",
            (state, score, liveness, spoofing, now, now, now if answered else None, session_id, PENDING, REPLACED),
        )
        return bool(rows)

    def notified(self, session_id: str, now: float) -> None:
        """The user's notice of how ``session_id`` ended is in the outbox (it arrives once)."""
        self.store.execute("UPDATE realname_sessions SET notified_at = ? WHERE id = ?", (now, session_id))

    def unnotified(self, before: float) -> list[Session]:
        """Sessions that ended (passed, failed, expired) before ``before`` whose user was never told: a restart
        came between the decision and the notice."""
        rows = self.store.execute(
            f"SELECT {_COLUMNS} FROM realname_sessions WHERE state IN (?, ?, ?) AND notified_at IS NULL"
            " AND finished_at < ?",
            (PASSED, FAILED, EXPIRED, before),
        )
        return [Session(*row) for row in rows]

    def close(self, session_id: str, state: str, now: float, answered: bool = False) -> bool:
        """pending → ``expired`` or ``replaced``; False when the session was no longer pending. A replaced
        session needs no notice; ``answered`` as for :meth:`finish`."""
        told = now if answered or state == REPLACED else None
        rows = self.store.execute(
            "UPDATE realname_sessions SET state = ?, finished_at = ?, checked_at = ?, notified_at = ?"
            " WHERE id = ? AND state = ? RETURNING id",
            (state, now, now, told, session_id, PENDING),
        )
        return bool(rows)

    def checked(self, session_id: str, now: float) -> None:
        """Remember when a pending session was last asked about."""
        self.store.execute("UPDATE realname_sessions SET checked_at = ? WHERE id = ?", (now, session_id))

    def forget(self, user_id: int) -> int:
        """Delete every session of ``user_id`` — and the user's quota rows — leaving no copy in the database
        files (``Store.forget_user``); returns how many sessions."""
        count = len(self.store.execute("SELECT id FROM realname_sessions WHERE user_id = ?", (user_id,)))
        self.store.forget_user(user_id, tables=("realname_sessions",))
        return count

    def purge(self, before: float) -> int:
        """Delete sessions no longer pending whose last change is older than ``before``; returns how many."""
        rows = self.store.execute(
            "DELETE FROM realname_sessions WHERE state != ? AND COALESCE(finished_at, created_at) < ? RETURNING id",
            (PENDING, before),
        )
        return len(rows)
