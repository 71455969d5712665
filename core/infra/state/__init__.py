"""The state port: what the bot remembers between two messages, behind one small interface.

Conversations in progress, album buffers, locks, admin-alert deduplication: everything is a JSON value
under a string key, and everything expires (``ttl`` seconds). Three implementations pass the same test
suite (``tests/test_state.py``): :class:`MemoryState` (the console with ``storage.path: ":memory:"``,
unit tests), :class:`SQLiteState` (the default: the ``state`` table of ``storage.path``, so a
conversation survives a restart) and :class:`RedisState` (cluster mode, ``cluster.redis_url``: several
processes share one Redis). Values are serialisable and no live object is ever stored.

**Photos are never stored here**: a conversation refers to a photo by the transport's reference (Telegram's
``file_id``) and holds bytes in process memory only (:mod:`core.pipeline.conversation`).

Every key family is built in :mod:`core.infra.keys`.
"""

from __future__ import annotations

from core.infra.state.base import State, StateLock
from core.infra.state.memory import MemoryState
from core.infra.state.redis import RedisState, RedisUnavailable
from core.infra.state.sqlite import SQLiteState

__all__ = ["MemoryState", "RedisState", "RedisUnavailable", "SQLiteState", "State", "StateLock", "open_state"]


def open_state(path: str, redis_url: str = "") -> State:
    """The state for the configuration: Redis when ``cluster.redis_url`` is set (:class:`RedisUnavailable`
    if it cannot be reached), else in memory for ``storage.path: ":memory:"``, else SQLite at ``path``."""
    if redis_url:
        return RedisState(redis_url)
    if path == ":memory:":
        return MemoryState()
    return SQLiteState(path)
