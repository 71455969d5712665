"""The state port in SQLite: the ``state`` table of the bot's database file (``storage.path``).

One connection, used only by one thread of its own, so state calls never wait behind provider calls in
the shared worker pools and never block the event loop. Each call is one transaction (``BEGIN
IMMEDIATE``), so several processes sharing the file still see every method as atomic.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core.infra.state.base import State, Value, dump
from core.infra.store import connect

_SCHEMA = "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"


class SQLiteState(State):
    """State in the ``state`` table of the SQLite file at ``path``."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aipbot-state")
        self._db: sqlite3.Connection = self._pool.submit(self._open, str(path)).result()

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        db = connect(path)
        db.execute(_SCHEMA)
        return db

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(db, now, *args)`` in one transaction on the state thread."""

        def call() -> Any:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db, self.clock(), *args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @staticmethod
    def _read(db: sqlite3.Connection, now: float, key: str) -> Value | None:
        row = db.execute("SELECT value FROM state WHERE key=? AND expires>?", (key, now)).fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _write(db: sqlite3.Connection, now: float, key: str, text: str | None, ttl: float) -> None:
        if text is None:
            db.execute("DELETE FROM state WHERE key=?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO state(key, value, expires) VALUES(?,?,?)", (key, text, now + ttl))

    async def get(self, key: str) -> Value | None:
        return await self._run(self._read, key)

    async def set(self, key: str, value: Value, ttl: float) -> None:
        await self._run(self._write, key, dump(value), ttl)

    async def add(self, key: str, value: Value, ttl: float) -> bool:
        text = dump(value)

        def add(db: sqlite3.Connection, now: float) -> bool:
            if self._read(db, now, key) is not None:
                return False
            self._write(db, now, key, text, ttl)
            return True

        return await self._run(add)

    async def replace(self, key: str, expected: Value | None, value: Value | None, ttl: float) -> bool:
        text = None if value is None else dump(value)

        def replace(db: sqlite3.Connection, now: float) -> bool:
            if self._read(db, now, key) != expected:
                return False
            self._write(db, now, key, text, ttl)
            return True

        return await self._run(replace)

    async def delete(self, key: str) -> Value | None:
        def delete(db: sqlite3.Connection, now: float) -> Value | None:
            old = self._read(db, now, key)
            self._write(db, now, key, None, 0)
            return old

        return await self._run(delete)

    async def append(self, key: str, item: Value, ttl: float) -> int:
        dump(item)

        def append(db: sqlite3.Connection, now: float) -> int:
            items = self._read(db, now, key) or []
            items.append(item)
            self._write(db, now, key, dump(items), ttl)
            return len(items)

        return await self._run(append)

    async def purge(self) -> int:
        return await self._run(lambda db, now: db.execute("DELETE FROM state WHERE expires<=?", (now,)).rowcount)

    def close(self) -> None:
        self._pool.submit(self._db.close).result()
        self._pool.shutdown(wait=True)
