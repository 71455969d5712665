"""The interface every state implementation offers (see :mod:`core.infra.state`)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Any

from core.infra import keys

#: A JSON value: what the state port stores.
Value = Any


def dump(value: Value) -> str:
    """``value`` as JSON text; a value that is not plain JSON (a live object) is a ``TypeError`` at once."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class State(ABC):
    """Asynchronous key → JSON value store with expiry; every method is atomic on its key.

    ``clock`` gives Unix seconds (wall time, so expiry survives a restart); tests replace it.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    @abstractmethod
    async def get(self, key: str) -> Value | None:
        """The value under ``key``, or None when there is none or it expired."""

    @abstractmethod
    async def set(self, key: str, value: Value, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (replacing what was there)."""

    @abstractmethod
    async def add(self, key: str, value: Value, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds nothing (or only something expired); True if stored."""

    @abstractmethod
    async def replace(self, key: str, expected: Value | None, value: Value | None, ttl: float) -> bool:
        """Compare and set: if ``key`` holds ``expected`` (None: nothing), store ``value`` (None: delete)."""

    @abstractmethod
    async def delete(self, key: str) -> Value | None:
        """Remove ``key``; returns what it held (None if nothing)."""

    @abstractmethod
    async def append(self, key: str, item: Value, ttl: float) -> int:
        """Append ``item`` to the list under ``key`` (created empty) and restart its ``ttl``; the new length."""

    @abstractmethod
    async def purge(self) -> int:
        """Forget every expired entry now (they are also ignored when read); how many were removed."""

    def close(self) -> None:  # noqa: B027 (optional: an implementation with nothing to release keeps it)
        """Release connections and threads (at shutdown)."""

    def lock(self, key: str, ttl: float = 60.0, *, poll: float = 0.02, timeout: float | None = None) -> StateLock:
        """``async with state.lock(key):`` — one holder at a time across everything sharing this state.

        The lock expires after ``ttl`` seconds (a holder that died does not block forever; a holder that needs
        longer calls :meth:`StateLock.extend`). A waiter polls from ``poll`` seconds, backing off to 0.5 s,
        and gives up with :class:`TimeoutError` after ``timeout`` seconds (None: waits as long as it takes).
        """
        return StateLock(self, key, ttl, poll, timeout)


class StateLock:
    """A lock built on :meth:`State.add` and :meth:`State.replace` (owner token, expiry)."""

    def __init__(self, state: State, key: str, ttl: float, poll: float, timeout: float | None = None) -> None:
        self.state, self.key, self.ttl, self.poll, self.timeout = state, keys.lock(key), ttl, poll, timeout
        self.token = secrets.token_hex(8)

    async def __aenter__(self) -> StateLock:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        poll = self.poll
        while not await self.state.add(self.key, self.token, self.ttl):
            if deadline is not None and loop.time() + poll > deadline:
                raise TimeoutError(f"{self.key} is held by another task")
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 0.5)
        return self

    async def extend(self, ttl: float | None = None) -> bool:
        """Renew the held lock for ``ttl`` (default: its own) seconds; False if it was lost meanwhile."""
        return await self.state.replace(self.key, self.token, self.token, ttl or self.ttl)

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.state.replace(self.key, self.token, None, self.ttl)
