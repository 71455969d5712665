"""SQLite persistence (stdlib ``sqlite3``): per-user daily quotas, and tables plugins add.

One connection guarded by a lock, so the store can be used from worker threads. The file is created
with owner-only permissions. Store nothing personal here beyond Telegram ids: no names, no ID numbers,
no images.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_use (
    user_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (user_id, command, day)
);
"""


def connect(path: str) -> sqlite3.Connection:
    """A connection to the database file ``path`` (created owner-only, in a private folder), in WAL mode,
    in autocommit mode (callers open their transactions), with ``secure_delete`` so deleted rows are
    overwritten. ``path`` may be ``:memory:``."""
    if path != ":memory:":
        folder = Path(path).parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        if not Path(path).exists():
            Path(path).touch(mode=0o600)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA secure_delete=ON")
    return db


class Store:
    """The bot's database. ``path`` may be ``:memory:``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = connect(self.path)
        self.executescript(_SCHEMA)

    def executescript(self, script: str) -> None:
        """Run DDL (plugins create their tables with ``CREATE TABLE IF NOT EXISTS``)."""
        with self._lock:
            self._db.executescript(script)

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run one statement and return its rows (as tuples)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(db)`` inside one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back if it raises).

        For records that must change together (a batch of updates journaled at once); call it through
        ``services.run_db``.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def quota_used(self, user_id: int, command: str, day: str) -> int:
        """How many times ``user_id`` used ``command`` on ``day``."""
        rows = self.execute(
            "SELECT count FROM quota_use WHERE user_id=? AND command=? AND day=?", (user_id, command, day)
        )
        return rows[0][0] if rows else 0

    def use_quota(self, user_id: int, command: str, day: str, limit: int) -> bool:
        """Count one use of ``command`` by ``user_id`` on ``day`` if fewer than ``limit`` were used."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT count FROM quota_use WHERE user_id=? AND command=? AND day=?", (user_id, command, day)
                ).fetchone()
                used = row[0] if row else 0
                if used >= limit:
                    return False
                self._db.execute(
                    "INSERT INTO quota_use(user_id, command, day, count) VALUES(?,?,?,1)"
                    " ON CONFLICT(user_id, command, day) DO UPDATE SET count = count + 1",
                    (user_id, command, day),
                )
                self._db.execute("DELETE FROM quota_use WHERE day < ?", (day,))
                return True
            finally:
                self._db.execute("COMMIT")

    def forget_user(self, user_id: int, *, tables: tuple[str, ...] = ()) -> int:
        """Delete every row about ``user_id`` — its quota use, and its rows in ``tables`` (each with a
        ``user_id`` column) — and leave no copy behind: rows are overwritten (``secure_delete``) and the
        write-ahead log is checkpointed and truncated. Returns the number of rows deleted."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = sum(
                    self._db.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount
                    for table in ("quota_use", *tables)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"Store({os.path.basename(self.path)!r})"
