"""The state port in process memory: for the console with an in-memory database, and for tests."""

from __future__ import annotations

import json
from typing import Any

from core.infra.state.base import State, Value, dump


class MemoryState(State):
    """Entries in a dict; values are kept as JSON text, so they behave exactly as a database would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._data: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._data[key]
            return None
        return entry[0]

    async def get(self, key: str) -> Value | None:
        text = self._live(key)
        return None if text is None else json.loads(text)

    async def set(self, key: str, value: Value, ttl: float) -> None:
        self._data[key] = (dump(value), self.clock() + ttl)

    async def add(self, key: str, value: Value, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def replace(self, key: str, expected: Value | None, value: Value | None, ttl: float) -> bool:
        current = self._live(key)
        if (None if current is None else json.loads(current)) != expected:
            return False
        if value is None:
            self._data.pop(key, None)
        else:
            await self.set(key, value, ttl)
        return True

    async def delete(self, key: str) -> Value | None:
        text = self._live(key)
        self._data.pop(key, None)
        return None if text is None else json.loads(text)

    async def append(self, key: str, item: Value, ttl: float) -> int:
        current = self._live(key)
        items = [] if current is None else json.loads(current)
        items.append(item)
        await self.set(key, items, ttl)
        return len(items)

    async def purge(self) -> int:
        now = self.clock()
        expired = [k for k, (_, expires) in self._data.items() if expires <= now]
        for k in expired:
            del self._data[k]
        return len(expired)
