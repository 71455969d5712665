"""core.infra.tokens: expiry, refresh-ahead, single flight, invalidation, derived and previous values."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest

from core.infra.tokens import TokenService


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Counts calls; returns ``prefix-1``, ``prefix-2``… living ``lifetime`` seconds; may block or fail."""

    def __init__(self, prefix: str = "tok", lifetime: float = 100.0, delay: float = 0.0) -> None:
        self.prefix = prefix
        self.lifetime = lifetime
        self.delay = delay
        self.calls = 0
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.fail_with: BaseException | None = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        time.sleep(self.delay)
        with self._lock:
            self.calls += 1
            n = next(self._counter)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return f"{self.prefix}-{n}", self.lifetime


def run_threads(n: int, target) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_200_concurrent_first_calls_fetch_once() -> None:
    tokens = TokenService()
    source = Source(delay=0.05)
    tokens.register("k", source)
    results = run_threads(200, lambda: tokens.get("k"))
    assert results == ["tok-1"] * 200
    assert source.calls == 1
    assert tokens.fetch_count("k") == 1


def test_value_is_cached_until_it_expires() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    source = Source(lifetime=100)
    tokens.register("k", source)
    assert tokens.get("k") == "tok-1"
    clock.now += 99
    assert tokens.get("k") == "tok-1"
    clock.now += 2
    assert tokens.get("k") == "tok-2"
    assert source.calls == 2


def test_refresh_margin_refreshes_ahead_and_is_capped_at_half_the_lifetime() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    tokens.register("a", Source("a", lifetime=100), refresh_margin=10)
    tokens.register("b", Source("b", lifetime=10), refresh_margin=86400)
    assert tokens.get("a") == "a-1" and tokens.get("b") == "b-1"
    clock.now += 4
    assert tokens.get("b") == "b-1"  # margin capped at 5 s: not due yet
    clock.now += 2
    assert tokens.get("b") == "b-2"
    clock.now += 83  # t = 89
    assert tokens.get("a") == "a-1"
    clock.now += 2  # t = 91, within 10 s of expiry
    assert tokens.get("a") == "a-2"


def test_while_one_caller_refreshes_ahead_others_keep_the_valid_value() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    source = Source(lifetime=100)
    tokens.register("k", source, refresh_margin=10)
    assert tokens.get("k") == "tok-1"
    clock.now += 95
    source.gate = threading.Event()
    source.started.clear()
    refresher: list[str] = []
    thread = threading.Thread(target=lambda: refresher.append(tokens.get("k")))
    thread.start()
    assert source.started.wait(5)
    assert tokens.get("k") == "tok-1"  # not blocked by the refresh in flight
    source.gate.set()
    thread.join(5)
    assert refresher == ["tok-2"]
    assert tokens.get("k") == "tok-2"
    assert source.calls == 2


def test_callers_wait_when_there_is_no_valid_value() -> None:
    tokens = TokenService()
    source = Source()
    source.gate = threading.Event()
    tokens.register("k", source)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(tokens.get("k"))) for _ in range(10)]
    for t in threads:
        t.start()
    assert source.started.wait(5)
    source.gate.set()
    for t in threads:
        t.join(5)
    assert results == ["tok-1"] * 10 and source.calls == 1


def test_invalidate_only_drops_the_rejected_value() -> None:
    tokens = TokenService()
    source = Source()
    tokens.register("k", source)
    first = tokens.get("k")
    tokens.invalidate("k", "some-other-value")
    assert tokens.get("k") == first
    tokens.invalidate("k", first)
    second = tokens.get("k")
    assert second != first
    tokens.invalidate("k", first)  # a late thread that also saw the old value: no effect
    assert tokens.get("k") == second
    tokens.invalidate("k")
    assert tokens.get("k") not in (first, second)
    assert source.calls == 3


def test_50_threads_seeing_the_same_rejection_cause_one_refetch() -> None:
    tokens = TokenService()
    source = Source(delay=0.02)
    tokens.register("k", source)
    stale = tokens.get("k")

    def rejected_then_retry() -> str:
        tokens.invalidate("k", stale)
        return tokens.get("k")

    results = run_threads(50, rejected_then_retry)
    assert set(results) == {"tok-2"}
    assert source.calls == 2


def test_a_failed_fetch_reaches_every_waiter_and_is_not_cached() -> None:
    tokens = TokenService()
    source = Source()
    source.fail_with = RuntimeError("provider down")
    source.gate = threading.Event()
    tokens.register("k", source)
    results: list = []

    def call() -> None:
        try:
            results.append(tokens.get("k"))
        except RuntimeError as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    assert source.started.wait(5)
    time.sleep(0.2)  # let the others queue behind the fetch in flight
    source.gate.set()
    for t in threads:
        t.join(5)
    assert len(results) == 5 and all(isinstance(r, RuntimeError) for r in results)
    assert source.calls == 1
    source.fail_with = None
    assert tokens.get("k") == "tok-2"


def test_renew_every_is_a_cadence_shorter_than_the_lifetime() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    tokens.register("w", Source("w", lifetime=7200), renew_every=1200)
    assert tokens.get("w") == "w-1"
    clock.now += 1199
    assert tokens.get("w") == "w-1"
    clock.now += 2
    assert tokens.get("w") == "w-2"


def test_previous_value_stays_retrievable_for_a_while() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    tokens.register("w", Source("w", lifetime=7200), renew_every=1200, keep_previous=60)
    assert tokens.previous("w") is None
    tokens.get("w")
    clock.now += 1201
    assert tokens.get("w") == "w-2"
    assert tokens.previous("w") == "w-1"
    clock.now += 59
    assert tokens.previous("w") == "w-1"
    clock.now += 2
    assert tokens.previous("w") is None


def test_an_invalidated_value_is_not_kept_as_previous() -> None:
    tokens = TokenService()
    tokens.register("w", Source("w"), keep_previous=60)
    tokens.invalidate("w", tokens.get("w"))
    assert tokens.get("w") == "w-2"
    assert tokens.previous("w") is None


def test_derived_values_follow_their_parent() -> None:
    clock = Clock()
    tokens = TokenService(clock=clock)
    parent = Source("access", lifetime=7200)
    tokens.register("access", parent, renew_every=1200, keep_previous=60)
    ticket_calls: list[str] = []

    def sign_ticket() -> tuple[str, float]:
        access = tokens.get("access")
        ticket_calls.append(access)
        return f"sign({access})", 3600

    tokens.register("sign", sign_ticket, parent="access", keep_previous=60)
    assert tokens.get("sign") == "sign(access-1)"
    assert tokens.get("sign") == "sign(access-1)"
    clock.now += 1201  # the parent is renewed: the ticket follows on its next get
    assert tokens.get("sign") == "sign(access-2)"
    assert tokens.previous("sign") == "sign(access-1)"
    assert ticket_calls == ["access-1", "access-2"]
    tokens.invalidate("access")
    assert tokens.get("sign") == "sign(access-3)"
    assert parent.calls == 3


def test_zero_lifetime_is_never_cached() -> None:
    tokens = TokenService()
    source = Source(lifetime=0)
    tokens.register("nonce", source)
    assert tokens.get("nonce") == "tok-1"
    assert tokens.get("nonce") == "tok-2"


def test_registering_again_keeps_the_cached_value() -> None:
    tokens = TokenService()
    first = Source("one")
    tokens.register("k", first)
    assert tokens.get("k") == "one-1"
    tokens.register("k", Source("two"))
    assert tokens.get("k") == "one-1"
    assert tokens.is_registered("k") and not tokens.is_registered("other")


def test_unknown_keys_and_bad_settings_are_errors() -> None:
    tokens = TokenService()
    with pytest.raises(KeyError):
        tokens.get("nope")
    with pytest.raises(ValueError):
        tokens.register("child", Source(), parent="nope")
    with pytest.raises(ValueError):
        tokens.register("k", Source(), refresh_margin=-1)
    tokens.register("empty", lambda: ("", 10))
    with pytest.raises(ValueError):
        tokens.get("empty")


def test_values_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    tokens = TokenService(clock=clock)
    tokens.register("k", lambda: ("supersecret-token-value", 10), refresh_margin=1)
    tokens.get("k")
    tokens.invalidate("k", "supersecret-token-value")
    clock.now += 20
    tokens.get("k")
    assert "fetched" in caplog.text
    assert "supersecret" not in caplog.text
    assert "supersecret" not in repr(tokens._cache)
