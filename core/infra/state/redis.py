"""The state port on a Redis server (cluster mode: several processes share one Redis).

Each entry is one Redis string under ``prefix + key`` holding an envelope ``{"e":<expires>,"v":<value>}``:
``e`` is the logical expiry in the state's ``clock`` (so expiry behaves exactly as in the other
implementations, fake clocks included) and every read and compare treats an expired envelope as absent.
Redis also gets a TTL (``PX``) a little longer than the logical one, so it collects the key by itself.
``set`` is one ``SET … PX``, ``get`` one ``GET``, ``delete`` one ``GETDEL``; ``add``, ``replace``,
``append`` and ``purge`` are Lua scripts (one atomic step on the server, ``now`` passed in). Values are
written as canonical JSON (sorted keys), so compare-and-set compares JSON texts.

The client (``redis.asyncio``) runs on an event loop of its own in one thread, as :class:`SQLiteState`
runs its connection on a thread: callers in any loop (or several loops one after the other) use it, and
:meth:`RedisState.close` works from anywhere, after the caller's loop has ended too.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import re
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from core.infra.state.base import State, Value

#: Milliseconds Redis keeps a key after its logical expiry (the logical expiry always comes first).
GRACE_MS = 100
CONNECT_TIMEOUT = 5.0

# KEYS[1] is the key in every script; ``live`` gives the value text of an envelope not yet expired.
_LIVE = """
local function live(raw, now)
  if not raw then return nil end
  local e, v = string.match(raw, '^{"e":([^,]+),"v":(.*)}$')
  if e and tonumber(e) > now then return v end
  return nil
end
"""
# ARGV: now, envelope, px
_ADD = (
    _LIVE
    + """
if live(redis.call('GET', KEYS[1]), tonumber(ARGV[1])) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
)
# ARGV: now, expected value text ('null': nothing), envelope ('': delete), px
_REPLACE = (
    _LIVE
    + """
if (live(redis.call('GET', KEYS[1]), tonumber(ARGV[1])) or 'null') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1
"""
)
# ARGV: now, item text, expires, px; the list text is spliced, never re-encoded (cjson loses [] and key order)
_APPEND = (
    _LIVE
    + """
local items = live(redis.call('GET', KEYS[1]), tonumber(ARGV[1]))
if not items or items == 'null' then
  items = '[' .. ARGV[2] .. ']'
elseif string.sub(items, 1, 1) ~= '[' then
  return redis.error_reply('not a list')
elseif items == '[]' then
  items = '[' .. ARGV[2] .. ']'
else
  items = string.sub(items, 1, -2) .. ',' .. ARGV[2] .. ']'
end
redis.call('SET', KEYS[1], '{"e":' .. ARGV[3] .. ',"v":' .. items .. '}', 'PX', ARGV[4])
return #cjson.decode(items)
"""
)
# KEYS: candidates; ARGV: now. Deletes the envelopes whose logical expiry has passed.
_PURGE = """
local n = 0
for _, k in ipairs(KEYS) do
  local raw = redis.call('GET', k)
  local e = raw and string.match(raw, '^{"e":([^,]+),"v":')
  if e and tonumber(e) <= tonumber(ARGV[1]) then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"""


class RedisUnavailable(Exception):
    """The Redis server cannot be reached (or the URL is unusable); ``str(err)`` is one line."""


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _reason(err: BaseException) -> str:
    """The operating system's words for a connection failure (``Connection refused``), else the message."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in errno.errorcode:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return str(err).strip().rstrip(".") or type(err).__name__


def _text(value: Value) -> str:
    """Canonical JSON text (sorted keys): equal values give equal texts; a live object is a ``TypeError``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True)


class RedisState(State):
    """State on the Redis server at ``url`` (``redis://`` or ``rediss://``), every key under ``prefix``."""

    def __init__(self, url: str, *, prefix: str = "aipbot:", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aipbot-redis", daemon=True)
        self._thread.start()
        try:
            self._redis: aioredis.Redis = self._wait(self._connect(url))
        except (RedisError, OSError, ValueError, TimeoutError) as err:
            self._stop_loop()
            raise RedisUnavailable(f"cannot connect to {shown_url(url)} ({_reason(err)})") from None

    async def _connect(self, url: str) -> aioredis.Redis:
        client = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._add, self._replace = client.register_script(_ADD), client.register_script(_REPLACE)
        self._append, self._purge = client.register_script(_APPEND), client.register_script(_PURGE)
        return client

    def _wait(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the client's loop and wait for it here (start and close only)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONNECT_TIMEOUT * 2)

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _envelope(self, text: str, ttl: float) -> tuple[str, int]:
        """The stored text for a value text living ``ttl`` seconds, and Redis's TTL in milliseconds."""
        return f'{{"e":{self.clock() + ttl!r},"v":{text}}}', self._px(ttl)

    @staticmethod
    def _px(ttl: float) -> int:
        return max(1, math.ceil(ttl * 1000)) + GRACE_MS

    def _open(self, raw: str | None) -> Value | None:
        """The value of a stored envelope, None when there is none or it expired."""
        if raw is None:
            return None
        try:
            envelope = json.loads(raw)
            if envelope["e"] > self.clock():
                return envelope["v"]
        except (ValueError, KeyError, TypeError):
            pass  # not an envelope of ours: as good as absent
        return None

    async def get(self, key: str) -> Value | None:
        return self._open(await self._run(self._redis.get(self.prefix + key)))

    async def set(self, key: str, value: Value, ttl: float) -> None:
        envelope, px = self._envelope(_text(value), ttl)
        await self._run(self._redis.set(self.prefix + key, envelope, px=px))

    async def add(self, key: str, value: Value, ttl: float) -> bool:
        envelope, px = self._envelope(_text(value), ttl)
        return bool(await self._run(self._add(keys=[self.prefix + key], args=[repr(self.clock()), envelope, px])))

    async def replace(self, key: str, expected: Value | None, value: Value | None, ttl: float) -> bool:
        envelope, px = ("", 0) if value is None else self._envelope(_text(value), ttl)
        args = [repr(self.clock()), _text(expected), envelope, px]
        return bool(await self._run(self._replace(keys=[self.prefix + key], args=args)))

    async def delete(self, key: str) -> Value | None:
        return self._open(await self._run(self._redis.getdel(self.prefix + key)))

    async def append(self, key: str, item: Value, ttl: float) -> int:
        now = self.clock()
        args = [repr(now), _text(item), repr(now + ttl), self._px(ttl)]
        try:
            return int(await self._run(self._append(keys=[self.prefix + key], args=args)))
        except ResponseError as err:
            if "not a list" in str(err):
                raise TypeError(f"state {key!r} does not hold a list") from None
            raise

    async def purge(self) -> int:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"

        async def purge() -> int:
            removed, cursor = 0, 0
            while True:
                cursor, keys = await self._redis.scan(cursor, match=pattern, count=500)
                if keys:
                    removed += await self._purge(keys=keys, args=[repr(self.clock())])
                if cursor == 0:
                    return removed

        return await self._run(purge())

    def close(self) -> None:
        """Close the connection pool and stop the client's loop (safe to call twice, from any loop)."""
        if self._loop.is_closed():
            return
        try:
            self._wait(self._redis.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
