"""Rates: one bucket for every client-side limit the bot keeps, in this process or across the cluster.

A limit is a :class:`Budget`: ``rate`` calls a second with ``burst`` of them allowed back to back (burst 1: calls
spaced ``1/rate`` apart). Its state is one number, the *theoretical arrival time* of the next call (GCRA, the
generic cell rate algorithm, equivalent to a token bucket of ``burst`` tokens refilled at ``rate``): a call may
go at ``max(now, tat - (burst - 1) / rate)`` and moves ``tat`` one interval past that instant.

- :class:`Bucket` is that state in this process (no lock of its own: its owner serialises it);
- :class:`LocalBudgets` and :class:`RedisBudgets` are the two implementations of one interface,
  :class:`Budgets` — ``reserve(budgets)``: one call in each of the budgets at once, at the first instant all
  of them allow, and how long to wait for it. ``LocalBudgets`` keeps its buckets in this process (thread-safe,
  on the monotonic clock); ``RedisBudgets`` runs the same arithmetic as one Lua script on Redis's clock, so
  every process reserves on one timeline, first come first served (``<prefix>qps:<name>`` holds the ``tat`` in
  microseconds of Redis's ``TIME``, with a TTL that lets an idle budget vanish);
- :class:`RateLimiter` is one budget with burst 1 and ``acquire()`` (the Baidu QPS limiter,
  :func:`core.providers.baidu.rate_limiter`); :class:`RedisRateLimiter` is the same on Redis, falling back to
  this process's limiter while Redis cannot be reached.

The send pacer (:mod:`core.sending.pacer`) uses :class:`Bucket` through :class:`LocalBudgets` for its per-chat,
per-group and overall limits, and :class:`RedisBudgets` for the same budgets in cluster mode.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

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
class Budget:
    """``rate`` calls a second (> 0), ``burst`` of them back to back (at least 1), under ``name``."""

    name: str
    rate: float
    burst: float = 1.0

    @property
    def interval(self) -> float:
        """Seconds between two calls at the rate."""
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        """How far ahead of its slot a call may go: ``burst - 1`` intervals."""
        return (max(1.0, self.burst) - 1.0) * self.interval


class Bucket:
    """One budget's state in this process: the theoretical arrival time ``tat`` (GCRA) on the owner's clock."""

    __slots__ = ("interval", "tat", "tolerance")

    def __init__(self, budget: Budget) -> None:
        self.tat = -math.inf
        self.interval, self.tolerance = budget.interval, budget.tolerance

    def follow(self, budget: Budget) -> None:
        """Take ``budget``'s rate and burst (the calls already placed keep their places)."""
        self.interval, self.tolerance = budget.interval, budget.tolerance

    def wait(self, now: float) -> float:
        """Seconds until a call may go (0: now)."""
        return max(0.0, self.tat - self.tolerance - now)

    def take(self, at: float) -> None:
        """Account for a call going at ``at``."""
        self.tat = max(self.tat, at) + self.interval

    def idle(self, now: float) -> bool:
        """Whether the bucket is full (forgetting it changes nothing)."""
        return self.tat <= now


def reserve(buckets: Sequence[Bucket], now: float) -> float:
    """Place one call in every bucket at the first instant all of them allow; seconds from ``now`` to it."""
    at = max([now, *(b.tat - b.tolerance for b in buckets)])
    for bucket in buckets:
        bucket.take(at)
    return at - now


class Budgets(Protocol):
    """Where budgets are kept: this process (:class:`LocalBudgets`) or Redis (:class:`RedisBudgets`)."""

    def reserve(self, budgets: Sequence[Budget]) -> float:
        """Reserve one call in each of ``budgets`` at the first instant all allow; seconds to wait for it."""
        ...


class LocalBudgets:
    """:class:`Budgets` in this process: a bucket per budget name, thread-safe, on ``clock`` (monotonic).

    ``max_buckets``: past that many, full buckets are forgotten (a chat that went quiet costs nothing).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 4096) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def bucket(self, budget: Budget, now: float) -> Bucket:
        """The bucket of ``budget`` (made full the first time), at its current rate and burst.

        For an owner that serialises its calls itself (the send pacer, on its event loop)."""
        found = self._buckets.get(budget.name)
        if found is None:
            if len(self._buckets) >= self.max_buckets:
                for name in [n for n, b in self._buckets.items() if b.idle(now)]:
                    del self._buckets[name]
            found = self._buckets[budget.name] = Bucket(budget)
        elif found.interval != budget.interval or found.tolerance != budget.tolerance:
            found.follow(budget)
        return found

    def reserve(self, budgets: Sequence[Budget]) -> float:
        with self._lock:
            now = self.clock()
            return reserve([self.bucket(b, now) for b in budgets], now)


class RedisBudgets:
    """:class:`Budgets` on Redis: ``<prefix>qps:<name>`` per budget, reserved by one Lua script on Redis's clock.

    ``redis``: a synchronous redis-py client (:attr:`core.infra.shared.SharedRedis.redis`). Raises
    ``RedisError`` when Redis cannot be reached (the caller decides what to fall back to).
    """

    def __init__(self, redis: Any, prefix: str) -> None:
        self.prefix = prefix
        self._reserve = redis.register_script(_RESERVE)

    def key(self, name: str) -> str:
        """The Redis key of budget ``name``."""
        return f"{self.prefix}qps:{name}"

    def reserve(self, budgets: Sequence[Budget]) -> float:
        args: list[int] = []
        for budget in budgets:
            step = max(1, int(budget.interval * 1_000_000))
            args += [step, int((max(1.0, budget.burst) - 1.0) * step)]
        return int(self._reserve(keys=[self.key(b.name) for b in budgets], args=args)) / 1_000_000


class RateLimiter:
    """Spaces calls ``1/rate`` seconds apart (burst 1), first come first served, across threads.

    No burst: a call waits until its slot, so ``n`` callers at once are served over ``n/rate`` seconds. ``rate``
    is ``qps × headroom``: a ``headroom`` under 1 keeps the calls that far under ``qps`` (the provider's cap),
    so that network jitter bunching two requests up on arrival does not exceed the cap.
    """

    def __init__(
        self,
        qps: float,
        *,
        headroom: float = 1.0,
        name: str = "qps",
        budgets: Budgets | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self.headroom = headroom
        self.name = name
        self.budgets: Budgets = budgets if budgets is not None else LocalBudgets(clock=clock)
        self.qps = qps

    @property
    def qps(self) -> float:
        """Calls per second allowed (the configured figure; calls go at :attr:`rate`)."""
        return self._qps

    @qps.setter
    def qps(self, value: float) -> None:
        if value <= 0:
            raise ValueError("qps must be > 0")
        self._qps = float(value)

    @property
    def rate(self) -> float:
        """Calls per second the limiter lets go: ``qps × headroom``."""
        return self.qps * self.headroom

    def reserve(self) -> float:
        """Take the next slot; returns how long to wait for it (seconds, ≥ 0)."""
        return self.budgets.reserve([Budget(self.name, self.rate)])

    def acquire(self) -> float:
        """Wait for the next slot; returns the time waited."""
        return wait_for_slot(self.reserve)


class RedisRateLimiter(RateLimiter):
    """:class:`RateLimiter` on Redis (``shared``: a :class:`core.infra.shared.SharedRedis`): one budget ``name``
    for every process, calls spaced on Redis's clock. When Redis cannot be reached the call is spaced by
    ``fallback`` (this process's limiter) and a warning is logged; the rate is ``fallback``'s (set one, set both).
    """

    def __init__(self, shared: Any, name: str, qps: float, fallback: RateLimiter) -> None:
        self.shared = shared
        self.fallback = fallback
        super().__init__(qps, headroom=fallback.headroom, name=name, budgets=shared.budgets)

    @property
    def qps(self) -> float:
        """Calls per second, for the whole cluster (kept, and checked, by the fallback limiter)."""
        return self.fallback.qps

    @qps.setter
    def qps(self, value: float) -> None:
        self.fallback.qps = value

    @property
    def rate(self) -> float:
        return self.fallback.rate

    def reserve(self) -> float:
        """Take the next slot of the cluster's budget; returns how long to wait for it (seconds, ≥ 0)."""
        try:
            return super().reserve()
        except RedisError as err:
            log.warning("QPS budget %s: Redis unavailable (%s), spacing this process's calls only", self.name, err)
            return self.fallback.reserve()


def wait_for_slot(reserve: Callable[[], float]) -> float:
    """Sleep until the slot ``reserve()`` took (a limiter's ``acquire``); returns the time waited."""
    wait = reserve()
    if wait > 0:
        time.sleep(wait)
    return wait
