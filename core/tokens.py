"""The token service: one cache for every credential-derived value the bot holds.

A *token source* is a function that fetches a fresh value and says how long it lives:
``source() -> (value, lifetime_seconds)``. Register it under a key, then ask for the key::

    tokens = TokenService()
    tokens.register("baidu:3f2a…", fetch_baidu_token, refresh_margin=86400)
    token = tokens.get("baidu:3f2a…")          # fetched once, then served from the cache
    tokens.invalidate("baidu:3f2a…", token)     # the provider said "token invalid" (Baidu 110/111/100)

What it guarantees:

- **Per-item expiry** (a :class:`cachetools.TLRUCache`): a value is dropped when its lifetime is over.
- **Refresh ahead**: a value is refreshed once it is within ``refresh_margin`` seconds of expiry (the
  margin is capped at half the lifetime, so short-lived values are not refetched on every call), or
  after ``renew_every`` seconds when that comes first (WeBank: renew every 20 minutes a token that
  lives two hours). While one caller refreshes, the others keep getting the still-valid value.
- **Single flight**: however many threads ask at once, one ``source()`` call per key is in flight; the
  others wait for its result (or its exception, which every waiter receives; nothing is cached then,
  so the next ``get`` tries again). ``source()`` runs outside the cache lock.
- **Invalidate only what was rejected**: ``invalidate(key, value)`` drops the entry only if it still
  holds ``value``, so 50 threads that all saw the same token rejected cause one refetch.
- **Derived values** (``parent=``, e.g. WeBank's SIGN ticket, fetched with the access token): a
  derived value is refetched whenever its parent gets a new value, and dropped with it.
- **Previous value** (``keep_previous=``): after a refresh the replaced value stays retrievable with
  :meth:`TokenService.previous` for that many seconds (WeBank: the old token and ticket stay valid
  about a minute, so an incoming signature may be made with either). A value dropped by
  ``invalidate`` is not kept: it was rejected.

Single-use values (WeBank's NONCE ticket) must not be registered: fetch them directly each time.
Values are never logged and never written anywhere; a source must not call ``get`` on its own key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TLRUCache

from core.metrics import STANDALONE, Metrics

log = logging.getLogger(__name__)

TokenSource = Callable[[], tuple[str, float]]


@dataclass(frozen=True)
class _Spec:
    source: TokenSource
    refresh_margin: float
    renew_every: float | None
    keep_previous: float
    parent: str | None


@dataclass(frozen=True)
class _Entry:
    value: str = field(repr=False)
    expires_at: float
    refresh_at: float
    parent_generation: int | None


class _Flight:
    """One fetch in progress; waiters block on ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: str | None = None
        self.error: BaseException | None = None


class TokenService:
    """Thread-safe cache of tokens with per-item expiry, refresh-ahead and single-flight fetching.

    ``clock`` is a monotonic clock in seconds (injectable for tests); ``maxsize`` bounds the number
    of cached values.
    """

    metrics: Metrics = STANDALONE  # the bot sets its own (core.app.BotServices): fetches are counted there

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, maxsize: int = 1024) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._specs: dict[str, _Spec] = {}
        self._cache: TLRUCache[str, _Entry] = TLRUCache(
            maxsize, ttu=lambda _key, entry, _now: entry.expires_at, timer=clock
        )
        self._flights: dict[str, _Flight] = {}
        self._generation: dict[str, int] = {}
        self._previous: dict[str, tuple[str, float]] = {}
        self._fetches: dict[str, int] = {}

    def register(
        self,
        key: str,
        source: TokenSource,
        *,
        refresh_margin: float = 0.0,
        renew_every: float | None = None,
        keep_previous: float = 0.0,
        parent: str | None = None,
    ) -> None:
        """Declare how to fetch ``key``: ``source() -> (value, lifetime in seconds)``.

        ``refresh_margin``: refresh this long before expiry (at most half the lifetime).
        ``renew_every``: also refresh this long after each fetch (a cadence shorter than the lifetime).
        ``keep_previous``: keep the replaced value for :meth:`previous` this many seconds after a refresh.
        ``parent``: a registered key this value derives from; refetched whenever the parent changes.
        Registering a key again replaces its source and settings and keeps a value already cached
        (several clients with the same credentials may share one service).
        """
        if refresh_margin < 0 or keep_previous < 0 or (renew_every is not None and renew_every <= 0):
            raise ValueError("refresh_margin and keep_previous must be >= 0, renew_every > 0")
        with self._lock:
            if parent is not None and parent not in self._specs:
                raise ValueError(f"parent token {parent!r} is not registered")
            self._specs[key] = _Spec(source, refresh_margin, renew_every, keep_previous, parent)

    def is_registered(self, key: str) -> bool:
        """Whether ``key`` has a source."""
        with self._lock:
            return key in self._specs

    def get(self, key: str) -> str:
        """The value for ``key``: cached, or fetched (once, however many callers) when missing or due.

        Raises whatever the source raised (every concurrent waiter gets it) and :class:`KeyError` for
        an unregistered key.
        """
        spec = self._spec(key)
        parent_generation: int | None = None
        if spec.parent is not None:
            self.get(spec.parent)
        with self._lock:
            entry = self._cache.get(key)
            fresh = entry is not None and self._parent_matches(spec, entry)
            if fresh and self._clock() < entry.refresh_at:
                return entry.value
            flight = self._flights.get(key)
            if flight is not None and fresh:
                return entry.value  # another thread is refreshing ahead of expiry: this one is still valid
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
                parent_generation = self._generation.get(spec.parent) if spec.parent else None
        if leader:
            return self._fetch(key, spec, flight, parent_generation)
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.value is not None
        return flight.value

    def previous(self, key: str) -> str | None:
        """The value ``key`` had before its last refresh, while ``keep_previous`` lasts; else ``None``."""
        with self._lock:
            kept = self._previous.get(key)
            if kept is None:
                return None
            value, until = kept
            if self._clock() >= until:
                del self._previous[key]
                return None
            return value

    def invalidate(self, key: str, value: str | None = None) -> None:
        """Drop ``key`` (only if it still holds ``value``, when given) and every value derived from it."""
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or (value is not None and entry.value != value):
                return
            self._drop(key)
        log.info("token %s invalidated", key)

    def fetch_count(self, key: str) -> int:
        """How many times ``key``'s source has been called (for logs, tests and benchmarks)."""
        with self._lock:
            return self._fetches.get(key, 0)

    # -- internals -------------------------------------------------------------------------------

    def _spec(self, key: str) -> _Spec:
        with self._lock:
            try:
                return self._specs[key]
            except KeyError:
                raise KeyError(f"token {key!r} is not registered") from None

    def _parent_matches(self, spec: _Spec, entry: _Entry) -> bool:
        return spec.parent is None or entry.parent_generation == self._generation.get(spec.parent)

    def _drop(self, key: str) -> None:
        """Remove ``key`` and its descendants from the cache (lock held)."""
        self._cache.pop(key, None)
        self._previous.pop(key, None)
        for child, spec in self._specs.items():
            if spec.parent == key:
                self._drop(child)

    def _fetch(self, key: str, spec: _Spec, flight: _Flight, parent_generation: int | None) -> str:
        started = self._clock()
        try:
            with self._lock:
                self._fetches[key] = self._fetches.get(key, 0) + 1
            value, lifetime = spec.source()
            if not isinstance(value, str) or not value:
                raise ValueError(f"token source for {key!r} returned no value")
            lifetime = float(lifetime)
        except BaseException as exc:
            with self._lock:
                self._flights.pop(key, None)
            flight.error = exc
            flight.done.set()
            self.metrics.token_fetch(key, "error")
            log.warning("token %s: fetch failed (%s)", key, type(exc).__name__)
            raise
        with self._lock:
            now = self._clock()
            old = self._cache.get(key)
            if old is not None and old.value != value and spec.keep_previous > 0:
                self._previous[key] = (old.value, min(old.expires_at, now + spec.keep_previous))
            self._generation[key] = self._generation.get(key, 0) + 1
            if lifetime > 0:
                expires_at = started + lifetime
                refresh_at = expires_at - min(spec.refresh_margin, lifetime / 2)
                if spec.renew_every is not None:
                    refresh_at = min(refresh_at, started + spec.renew_every)
                self._cache[key] = _Entry(value, expires_at, refresh_at, parent_generation)
            else:
                self._cache.pop(key, None)
            self._flights.pop(key, None)  # derived values see the new generation and refetch on next get
        flight.value = value
        flight.done.set()
        self.metrics.token_fetch(key, "ok")
        log.info("token %s fetched (valid %.0f s)", key, lifetime)
        return value


_default = TokenService()


def default_service() -> TokenService:
    """The token service of provider clients created without one (scripts); the bot passes its own, one for
    every credential of every client (``services.tokens``)."""
    return _default
