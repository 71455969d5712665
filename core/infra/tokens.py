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
Values are never logged; a source must not call ``get`` on its own key.

**Cluster mode** (``shared=``, a :class:`core.infra.shared.SharedRedis`; the bot passes one when
``cluster.redis_url`` is set): the in-process cache and single flight stay in front, and the leader of a
flight asks Redis before the source. A value there that is not yet due (its age from Redis's ``PTTL``, the
same refresh margin and cadence as above) is taken as is; otherwise one process in the cluster takes the
key's lock (``SET NX PX``, an owner token, released by compare-and-delete) and fetches, the others poll
the value for at most the lock's lifetime and then fetch themselves (the holder died). A derived value is
stored with a fingerprint of the parent value it was fetched with and is taken only under that parent; the
previous value and how long it stays valid are stored with the new one, so :meth:`TokenService.previous`
answers alike in every process. ``invalidate(key, value)`` also deletes the Redis copy if it still holds
``value``, so a rejected token is refetched once for the cluster. When Redis cannot be reached the service
fetches by itself (logged), as without ``shared``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cachetools import TLRUCache
from redis.exceptions import RedisError

from core.infra.metrics import STANDALONE, Metrics
from core.infra.redact import register_secret

if TYPE_CHECKING:
    from core.infra.shared import SharedRedis, TokenRecord

log = logging.getLogger(__name__)

TokenSource = Callable[[], tuple[str, float]]
#: What a flight's leader obtained: value, lifetime, age (s since fetched), previous (value, seconds left) or None.
_Obtained = tuple[str, float, float, "tuple[str, float] | None"]


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
    of cached values; ``shared``: the cluster's Redis (see the module docstring), None for this process only;
    ``metrics``: the bot's metrics, where fetches are counted (the provider clients count their calls there too).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        maxsize: int = 1024,
        shared: SharedRedis | None = None,
        metrics: Metrics = STANDALONE,
    ) -> None:
        self._clock = clock
        self.shared = shared
        self.metrics = metrics
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
        parent_value: str | None = None
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
                parent_entry = self._cache.get(spec.parent) if spec.parent else None
                parent_value = parent_entry.value if parent_entry is not None else None
        if leader:
            return self._fetch(key, spec, flight, parent_generation, parent_value)
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
        """Drop ``key`` (only if it still holds ``value``, when given) and every value derived from it.

        In cluster mode the Redis copy is deleted too, under the same condition (one compare-and-delete).
        """
        if self.shared is not None:
            try:
                if self.shared.delete_token(key, value):
                    log.info("token %s invalidated for the cluster", key)
                    self._invalidate_shared_children(key, value)
            except RedisError as err:
                log.warning(
                    "token %s: Redis unavailable (%s), invalidated in this process only", key, type(err).__name__
                )
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

    def _call_source(self, key: str, spec: _Spec) -> tuple[str, float]:
        with self._lock:
            self._fetches[key] = self._fetches.get(key, 0) + 1
        value, lifetime = spec.source()
        if not isinstance(value, str) or not value:
            raise ValueError(f"token source for {key!r} returned no value")
        return value, float(lifetime)

    @staticmethod
    def _refresh_after(spec: _Spec, lifetime: float) -> float:
        """Seconds after its fetch at which a value of ``lifetime`` is due for a refresh."""
        after = lifetime - min(spec.refresh_margin, lifetime / 2)
        return min(after, spec.renew_every) if spec.renew_every is not None else after

    def _fetch(
        self, key: str, spec: _Spec, flight: _Flight, parent_generation: int | None, parent_value: str | None = None
    ) -> str:
        started = self._clock()
        fetched = True
        kept: tuple[str, float] | None = None
        age = 0.0
        try:
            if self.shared is None:
                value, lifetime = self._call_source(key, spec)
            else:
                (value, lifetime, age, kept), fetched = self._obtain_shared(key, spec, parent_value)
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
            if self.shared is None:
                if old is not None and old.value != value and spec.keep_previous > 0:
                    self._previous[key] = (old.value, min(old.expires_at, now + spec.keep_previous))
            elif kept is not None and kept[1] > 0 and kept[0] != value:
                self._previous[key] = (kept[0], now + kept[1])  # as the cluster keeps it
            elif old is not None and old.value != value:
                self._previous.pop(key, None)  # replaced with no previous in Redis: invalidated, or expired
            self._generation[key] = self._generation.get(key, 0) + 1
            if lifetime > 0:
                origin = started - age  # when the value was fetched, in this service's clock
                expires_at = origin + lifetime
                refresh_at = origin + self._refresh_after(spec, lifetime)
                self._cache[key] = _Entry(value, expires_at, refresh_at, parent_generation)
            else:
                self._cache.pop(key, None)
            self._flights.pop(key, None)  # derived values see the new generation and refetch on next get
        flight.value = value
        flight.done.set()
        if fetched:
            self.metrics.token_fetch(key, "ok")
            log.info("token %s fetched (valid %.0f s)", key, lifetime)
        else:
            log.info("token %s taken from the cluster (valid %.0f s more)", key, lifetime - age)
        return value

    # -- cluster mode ----------------------------------------------------------------------------------------

    def _obtain_shared(self, key: str, spec: _Spec, parent_value: str | None) -> tuple[_Obtained, bool]:
        """The value from Redis when one is usable, else fetched once for the cluster; and whether it was fetched."""
        shared = self.shared
        assert shared is not None
        parent_fp = _fingerprint(parent_value) if spec.parent is not None and parent_value is not None else None

        def usable(rec: TokenRecord | None) -> bool:
            return rec is not None and rec.parent == parent_fp and rec.age < self._refresh_after(spec, rec.lifetime)

        calls = self.fetch_count(key)
        try:
            rec = shared.read_token(key)
            if usable(rec):
                return self._adopt(rec), False  # type: ignore[arg-type]
            deadline = time.monotonic() + shared.lock_seconds
            while True:
                owner = shared.lock_token(key)
                if owner is not None:
                    try:
                        rec = shared.read_token(key)  # another process may have stored it meanwhile
                        if usable(rec):
                            return self._adopt(rec), False  # type: ignore[arg-type]
                        return self._fetch_and_store(key, spec, rec, parent_fp), True
                    finally:
                        with contextlib.suppress(RedisError):  # else the lock expires by itself
                            shared.unlock_token(key, owner)
                while time.monotonic() < deadline:  # another process fetches: wait for its value
                    time.sleep(_POLL_SECONDS)
                    rec = shared.read_token(key)
                    if usable(rec):
                        return self._adopt(rec), False  # type: ignore[arg-type]
                    if not shared.token_locked(key):
                        break  # it finished without a usable value (its fetch failed): try the lock
                else:
                    log.warning("token %s: no value from the process holding the lock in time, fetching here", key)
                    return self._fetch_and_store(key, spec, rec, parent_fp), True
        except RedisError as err:
            if self.fetch_count(key) != calls:
                raise  # the source itself failed so: not a reason to call it twice
            log.warning("token %s: Redis unavailable (%s), fetching without the cluster", key, type(err).__name__)
            value, lifetime = self._call_source(key, spec)
            return (value, lifetime, 0.0, None), True

    def _invalidate_shared_children(self, key: str, value: str | None) -> None:
        """Delete the Redis copies of the values derived from ``key``'s ``value`` (all of them when ``None``)."""
        assert self.shared is not None
        with self._lock:
            children = [child for child, spec in self._specs.items() if spec.parent == key]
        for child in children:
            rec = self.shared.read_token(child)
            if rec is None or (value is not None and rec.parent != _fingerprint(value)):
                continue
            if self.shared.delete_token(child, rec.value):
                self._invalidate_shared_children(child, rec.value)

    def _adopt(self, rec: TokenRecord) -> _Obtained:
        register_secret(rec.value)
        kept = None
        if rec.previous is not None:
            register_secret(rec.previous)
            kept = (rec.previous, rec.keep - rec.age)
        return rec.value, rec.lifetime, rec.age, kept

    def _fetch_and_store(self, key: str, spec: _Spec, old: TokenRecord | None, parent_fp: str | None) -> _Obtained:
        from core.infra.shared import TokenRecord

        value, lifetime = self._call_source(key, spec)
        previous, keep = None, 0.0
        if old is not None and old.value != value and spec.keep_previous > 0:
            previous, keep = old.value, min(spec.keep_previous, old.remaining)
        try:
            assert self.shared is not None
            self.shared.write_token(key, TokenRecord(value, lifetime, lifetime, parent_fp, previous, keep))
        except RedisError as err:
            log.warning("token %s: fetched, but Redis unavailable to share it (%s)", key, type(err).__name__)
        return value, lifetime, 0.0, (previous, keep) if previous is not None else None


_POLL_SECONDS = 0.05


def _fingerprint(value: str) -> str:
    """A short fingerprint of a (secret) value, safe to store next to a derived value."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


_default = TokenService()


def default_service() -> TokenService:
    """The token service of provider clients created without one (scripts); the bot passes its own, one for
    every credential of every client (``services.tokens``)."""
    return _default
