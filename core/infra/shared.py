"""What the processes of one bot share through Redis, synchronously (worker threads): tokens and rate budgets.

:class:`SharedRedis` is a pooled synchronous redis-py client (the token service and the provider
limiters run in worker threads; the asynchronous state port is for the event loop) and the Lua scripts:

- **tokens** (:class:`core.infra.tokens.TokenService` with ``shared=``): a value is one string
  ``<prefix>token:<key>`` holding JSON ``{"v": value, "l": lifetime, "p": parent fingerprint, "o": previous
  value, "k": seconds the previous value stays valid}`` with a ``PX`` TTL of its lifetime (``PTTL`` tells
  every process how much of it is left, in Redis's clock). ``<key>`` is the token service's key, built from
  a fingerprint of the credentials (never the credentials). The cross-process single flight is
  ``<prefix>token:<key>:lock``: ``SET NX PX`` with a random owner token, released by compare-and-delete.
  ``invalidate`` is a compare-and-delete on the value.
- **rate budgets** (:attr:`SharedRedis.budgets`, a :class:`core.infra.rates.RedisBudgets`): the Baidu QPS
  budget and Telegram's send rates, ``<prefix>qps:<name>``; the script and its arithmetic are
  :mod:`core.infra.rates`'s (one bucket implementation for this process and for Redis).

Token values are secrets: they are in Redis (which the admin secures) and never in a log or an exception.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis

from core.infra.rates import RedisBudgets
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
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30)
        self._delete_if_value = self.redis.register_script(_DELETE_IF_VALUE)
        self._release = self.redis.register_script(_RELEASE)
        #: the rate budgets every process shares (Baidu's QPS, Telegram's send rates)
        self.budgets = RedisBudgets(self.redis, prefix)

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
