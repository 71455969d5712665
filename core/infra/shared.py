"""What the processes of one bot share through Redis, synchronously (worker threads): tokens and QPS budgets.

:class:`SharedRedis` is a pooled synchronous redis-py client (the token service and the provider
limiters run in worker threads; the asynchronous state port is for the event loop) and the Lua scripts:

- **tokens** (:class:`core.infra.tokens.TokenService` with ``shared=``): a value is one string
  ``<prefix>token:<key>`` holding JSON ``{"v": value, "l": lifetime, "p": parent fingerprint, "o": previous
  value, "k": seconds the previous value stays valid}`` with a ``PX`` TTL of its lifetime (``PTTL`` tells
  every process how much of it is left, in Redis's clock). ``<key>`` is the token service's key, built from
  a fingerprint of the credentials (never the credentials). The cross-process single flight is
  ``<prefix>token:<key>:lock``: ``SET NX PX`` with a random owner token, released by compare-and-delete.
  ``invalidate`` is a compare-and-delete on the value.
- **QPS** (:class:`RedisRateLimiter`): ``<prefix>qps:<name>`` holds the next free slot (microseconds of
  Redis's ``TIME``); one script reserves a slot and returns the wait, so every process spaces its calls
  on the same timeline, first come first served.

Token values are secrets: they are in Redis (which the admin secures) and never in a log or an exception.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import RedisError

from core.infra.state.redis import shown_url

log = logging.getLogger(__name__)

#: Seconds the cross-process token lock lives (a holder that died frees it then); waiters wait that long.
LOCK_SECONDS = 30.0

# KEYS[1]: value key; ARGV[1]: value. Deletes the record only if it still holds that value.
_DELETE_IF_VALUE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if ok and type(rec) == 'table' and rec['v'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1]: lock key; ARGV[1]: owner token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: one key per budget, each holding its theoretical arrival time (µs of Redis's TIME: GCRA);
# ARGV: per key, its interval (µs) and its burst tolerance (µs: (burst - 1) intervals). The call goes at the
# first instant every budget allows, and takes its place in all of them at that instant. Returns the wait (µs).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at, tats = now, {}
for i, key in ipairs(KEYS) do
  tats[i] = tonumber(redis.call('GET', key) or '0')
  at = math.max(at, tats[i] - tonumber(ARGV[2 * i]))
end
for i, key in ipairs(KEYS) do
  local after = math.max(tats[i], at) + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, string.format('%.0f', after), 'PX', math.floor((after - now) / 1000) + 1000)
end
return string.format('%.0f', at - now)
"""


@dataclass(frozen=True)
class TokenRecord:
    """A token as Redis holds it: ``remaining`` seconds of ``lifetime`` are left (Redis's ``PTTL``)."""

    value: str = field(repr=False)
    lifetime: float
    remaining: float
    parent: str | None = None
    previous: str | None = field(default=None, repr=False)
    keep: float = 0.0

    @property
    def age(self) -> float:
        """Seconds since the value was fetched."""
        return max(0.0, self.lifetime - self.remaining)


class SharedRedis:
    """A pooled synchronous client of the Redis at ``url``, every key under ``prefix`` (the state's prefix)."""

    def __init__(self, url: str, *, prefix: str = "aipbot:", lock_seconds: float = LOCK_SECONDS) -> None:
        self.url = url
        self.prefix = prefix
        self.lock_seconds = lock_seconds
        #: the provider limiters on this connection, by budget (``core.providers.baidu.rate_limiter``)
        self.limiters: dict[str, RedisRateLimiter] = {}
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30)
        self._delete_if_value = self.redis.register_script(_DELETE_IF_VALUE)
        self._release = self.redis.register_script(_RELEASE)
        self._reserve = self.redis.register_script(_RESERVE)

    def __repr__(self) -> str:
        return f"SharedRedis({shown_url(self.url)!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self.redis.close()

    # -- tokens ---------------------------------------------------------------------------------------

    def _token_key(self, key: str) -> str:
        return f"{self.prefix}token:{key}"

    def read_token(self, key: str) -> TokenRecord | None:
        """The record of ``key``, or None (absent, expired or unreadable)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self._token_key(key))
        pipe.pttl(self._token_key(key))
        raw, pttl = pipe.execute()
        if raw is None or pttl is None or pttl <= 0:
            return None
        try:
            rec = json.loads(raw)
            return TokenRecord(
                str(rec["v"]),
                float(rec["l"]),
                pttl / 1000.0,
                rec.get("p"),
                rec.get("o"),
                float(rec.get("k") or 0),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("token %s: unreadable record in Redis, ignored", key)
            return None

    def write_token(self, key: str, record: TokenRecord) -> None:
        """Store ``record`` for its ``lifetime`` (nothing is stored for a lifetime ≤ 0)."""
        if record.lifetime <= 0:
            return
        body: dict[str, Any] = {"v": record.value, "l": record.lifetime, "p": record.parent}
        if record.previous is not None and record.keep > 0:
            body["o"], body["k"] = record.previous, record.keep
        self.redis.set(self._token_key(key), json.dumps(body), px=max(1, int(record.lifetime * 1000)))

    def delete_token(self, key: str, value: str | None = None) -> bool:
        """Delete ``key``'s record (only if it still holds ``value``, when given); whether one was deleted."""
        if value is None:
            return bool(self.redis.delete(self._token_key(key)))
        return bool(self._delete_if_value(keys=[self._token_key(key)], args=[value]))

    def lock_token(self, key: str) -> str | None:
        """Take the cluster's fetch lock of ``key``: the owner token, or None when another process holds it."""
        owner = secrets.token_hex(16)
        ok = self.redis.set(self._token_key(key) + ":lock", owner, nx=True, px=int(self.lock_seconds * 1000))
        return owner if ok else None

    def unlock_token(self, key: str, owner: str) -> None:
        """Release the lock if ``owner`` still holds it (it may have expired and been taken by another)."""
        self._release(keys=[self._token_key(key) + ":lock"], args=[owner])

    def token_locked(self, key: str) -> bool:
        """Whether some process holds ``key``'s fetch lock."""
        return bool(self.redis.exists(self._token_key(key) + ":lock"))

    # -- QPS ----------------------------------------------------------------------------------------------

    def reserve_slot(self, name: str, interval: float) -> float:
        """Reserve the next slot of budget ``name`` (slots ``interval`` seconds apart); seconds to wait for it."""
        return self.reserve_slots([(name, interval, 1.0)])

    def reserve_slots(self, budgets: list[tuple[str, float, float]]) -> float:
        """Reserve one call in each budget ``(name, interval, burst)`` at once — at the first instant all of them
        allow (``burst`` calls may go back to back, then one per ``interval`` seconds); seconds to wait for it."""
        args: list[int] = []
        for _, interval, burst in budgets:
            step = max(1, int(interval * 1_000_000))
            args += [step, int(max(0.0, burst - 1) * step)]
        keys = [f"{self.prefix}qps:{name}" for name, _, _ in budgets]
        return int(self._reserve(keys=keys, args=args)) / 1_000_000


class RedisRateLimiter:
    """:class:`core.providers.baidu.RateLimiter` on Redis: one budget ``name`` for every process.

    Calls are spaced ``1/qps`` apart on Redis's clock, first come first served across processes. When Redis
    cannot be reached the call is spaced by ``fallback`` (this process's limiter) and a warning is logged.
    """

    def __init__(self, shared: SharedRedis, name: str, qps: float, fallback: Any) -> None:
        self.shared = shared
        self.name = name
        self.fallback = fallback
        self.qps = qps

    @property
    def qps(self) -> float:
        """Calls per second, for the whole cluster (kept, and checked, by the fallback limiter)."""
        return float(self.fallback.qps)

    @qps.setter
    def qps(self, value: float) -> None:
        self.fallback.qps = value

    def reserve(self) -> float:
        """Take the next slot of the cluster's budget; returns how long to wait for it (seconds, ≥ 0)."""
        try:
            return self.shared.reserve_slot(self.name, 1.0 / self.qps)
        except RedisError as err:
            log.warning("QPS budget %s: Redis unavailable (%s), spacing this process's calls only", self.name, err)
            return float(self.fallback.reserve())

    def acquire(self) -> float:
        """Wait for the next slot; returns the time waited."""
        return wait_for_slot(self.reserve)


def wait_for_slot(reserve: Callable[[], float]) -> float:
    """Sleep until the slot ``reserve()`` took (a limiter's ``acquire``); returns the time waited."""
    wait = reserve()
    if wait > 0:
        time.sleep(wait)
    return wait
