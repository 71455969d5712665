"""core.infra.shared on a real redis-server: one token fetch for the cluster, one QPS budget for every process."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.infra.rates import RedisRateLimiter
from core.infra.shared import SharedRedis
from core.infra.tokens import TokenService
from core.providers.baidu import BaiduClient
from tests.fakes.baidu import FakeBaidu
from tests.servers import RedisServer
from tests.test_baidu_client import OCR_PATH
from tests.test_tokens import Source, run_threads

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def prefix(redis_server: RedisServer) -> str:
    return redis_server.prefix()


@pytest.fixture
def connect(redis_server: RedisServer, prefix: str) -> Iterator[Callable[[], SharedRedis]]:
    """A new connection pool to the test server per call (one per "process"), all on one prefix."""
    made: list[SharedRedis] = []

    def make() -> SharedRedis:
        made.append(SharedRedis(redis_server.url, prefix=prefix, lock_seconds=5))
        return made[-1]

    yield make
    for shared in made:
        shared.close()


# -- tokens ----------------------------------------------------------------------------------------------


def test_two_services_asking_at_once_fetch_once_for_the_cluster(connect, redis_server, prefix) -> None:
    source = Source(delay=0.2)
    services = [TokenService(shared=connect()) for _ in range(2)]
    for tokens in services:
        tokens.register("baidu:abc", source)
    results = run_threads(40, lambda i=iter(range(40)): services[next(i) % 2].get("baidu:abc"))
    assert results == ["tok-1"] * 40
    assert source.calls == 1
    assert sum(t.fetch_count("baidu:abc") for t in services) == 1
    stored = json.loads(redis_server.client().get(f"{prefix}token:baidu:abc"))
    assert stored["v"] == "tok-1" and stored["l"] == 100.0
    assert 0 < redis_server.client().pttl(f"{prefix}token:baidu:abc") <= 100_000
    assert not redis_server.client().exists(f"{prefix}token:baidu:abc:lock")  # released


def test_invalidate_if_same_from_both_processes_refetches_once(connect) -> None:
    source = Source(delay=0.05)
    services = [TokenService(shared=connect()) for _ in range(2)]
    for tokens in services:
        tokens.register("k", source)
    stale = services[0].get("k")
    assert services[1].get("k") == stale and source.calls == 1

    def rejected_then_retry(i=iter(range(40))) -> str:
        tokens = services[next(i) % 2]
        tokens.invalidate("k", stale)
        return tokens.get("k")

    results = run_threads(40, rejected_then_retry)
    assert set(results) == {"tok-2"}
    assert source.calls == 2
    services[1].invalidate("k", stale)  # a late thread that saw the old value: no effect anywhere
    fresh = TokenService(shared=connect())
    fresh.register("k", source)
    assert fresh.get("k") == "tok-2" and source.calls == 2


def test_a_failed_fetch_is_not_shared_and_the_next_get_fetches(connect) -> None:
    source = Source()
    source.fail_with = RuntimeError("provider down")
    a, b = TokenService(shared=connect()), TokenService(shared=connect())
    a.register("k", source)
    b.register("k", source)
    with pytest.raises(RuntimeError):
        a.get("k")
    source.fail_with = None
    assert b.get("k") == "tok-2"  # the lock was released: b fetched at once
    assert a.get("k") == "tok-2" and source.calls == 2


def test_a_holder_that_died_delays_the_others_only_as_long_as_its_lock(redis_server, prefix) -> None:
    shared = SharedRedis(redis_server.url, prefix=prefix, lock_seconds=0.5)
    try:
        assert shared.lock_token("k") is not None  # a process took the lock and died
        tokens = TokenService(shared=shared)
        source = Source()
        tokens.register("k", source)
        assert tokens.get("k") == "tok-1"  # after the dead holder's lock expired (0.5 s), not forever
        assert source.calls == 1
    finally:
        shared.close()


def test_renewal_previous_values_and_derived_tickets_across_processes(connect) -> None:
    """WeBank's shape: an access token renewed every 0.5 s, a SIGN ticket derived from it, previous values kept."""
    access = Source("access", lifetime=100)
    ticket_calls: list[str] = []
    services = [TokenService(shared=connect()) for _ in range(2)]

    def register(tokens: TokenService) -> None:
        def sign_ticket() -> tuple[str, float]:
            value = tokens.get("access")
            ticket_calls.append(value)
            return f"sign({value})", 3600

        tokens.register("access", access, renew_every=0.5, keep_previous=60)
        tokens.register("sign", sign_ticket, refresh_margin=60, keep_previous=60, parent="access")

    for tokens in services:
        register(tokens)
    a, b = services
    assert a.get("sign") == "sign(access-1)"
    assert b.get("sign") == "sign(access-1)"
    assert access.calls == 1 and ticket_calls == ["access-1"]
    time.sleep(0.6)  # the renewal cadence has passed for every process
    assert a.get("sign") == "sign(access-2)"
    assert a.previous("sign") == "sign(access-1)" and a.previous("access") == "access-1"
    assert b.get("sign") == "sign(access-2)"  # taken from Redis: no fetch in b
    assert b.previous("sign") == "sign(access-1)" and b.previous("access") == "access-1"
    late = TokenService(shared=connect())  # a process started after the renewal knows the previous ticket too
    register(late)
    assert late.get("sign") == "sign(access-2)" and late.previous("sign") == "sign(access-1)"
    assert access.calls == 2 and ticket_calls == ["access-1", "access-2"]
    a.invalidate("access", "access-2")  # rejected: refetched once, and neither it nor its ticket kept as previous
    assert a.get("sign") == "sign(access-3)"
    assert a.previous("access") is None and a.previous("sign") is None
    b.invalidate("access", "access-2")  # b sees the rejection too: it takes what a fetched
    assert b.get("sign") == "sign(access-3)"
    assert b.previous("access") is None and b.previous("sign") is None
    assert access.calls == 3 and ticket_calls == ["access-1", "access-2", "access-3"]


def test_without_redis_reachable_the_service_fetches_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    shared = SharedRedis("redis://127.0.0.1:1/0")
    try:
        tokens = TokenService(shared=shared)
        tokens.register("k", lambda: ("secret-token-xyz", 100))
        assert tokens.get("k") == "secret-token-xyz"
        tokens.invalidate("k", "secret-token-xyz")
        assert "Redis unavailable" in caplog.text and "secret-token-xyz" not in caplog.text
    finally:
        shared.close()


CHILD = textwrap.dedent(
    """
    import json, sys, threading
    import redis
    from core.infra.shared import SharedRedis
    from core.infra.tokens import TokenService

    url, prefix = sys.argv[1], sys.argv[2]
    counter = redis.Redis.from_url(url)

    def source():
        import time
        time.sleep(0.3)
        return f"tok-{counter.incr(prefix + 'calls')}", 100.0

    tokens = TokenService(shared=SharedRedis(url, prefix=prefix))
    tokens.register("baidu:fp", source)
    barrier = threading.Barrier(20)
    results = []

    def work():
        barrier.wait()
        results.append(tokens.get("baidu:fp"))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    print(json.dumps({"results": results, "fetches": tokens.fetch_count("baidu:fp")}))
    """
)


def test_two_real_processes_fetch_once(redis_server: RedisServer, prefix: str) -> None:
    args = [sys.executable, "-c", CHILD, redis_server.url, prefix]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [o["results"] for o in outs] == [["tok-1"] * 20] * 2
    assert sum(o["fetches"] for o in outs) == 1
    assert redis_server.client().get(prefix + "calls") == "1"


# -- QPS -------------------------------------------------------------------------------------------------


def test_two_limiters_share_one_budget(connect) -> None:
    from core.providers.baidu import RateLimiter

    # slots, not wall-clock times: the script reserves on Redis's clock, so the budget is read back exactly
    qps, n = 5.0, 20
    limiters = [RedisRateLimiter(connect(), "baidu:pair", qps, RateLimiter(qps)) for _ in range(2)]
    key = limiters[0].shared.prefix + "qps:baidu:pair"
    assert limiters[0].reserve() == 0  # the first slot is now
    first = int(limiters[0].shared.redis.get(key))
    waits: list[float] = []
    lock = threading.Lock()

    def call(i=iter(range(1, n))) -> None:
        wait = limiters[next(i) % 2].reserve()  # both limiters, from many threads, at once
        with lock:
            waits.append(wait)

    run_threads(n - 1, call)
    interval_us = int(1_000_000 / qps)
    assert int(limiters[1].shared.redis.get(key)) - first == (n - 1) * interval_us  # one budget, n slots in all
    assert len(waits) == n - 1 and max(waits) >= (n - 1) / qps - 1.0  # the last caller waits for the queue


def test_limiter_without_redis_falls_back_to_this_process() -> None:
    from core.providers.baidu import RateLimiter

    shared = SharedRedis("redis://127.0.0.1:1/0")
    try:
        now = [0.0]
        limiter = RedisRateLimiter(shared, "x", 4, RateLimiter(4, clock=lambda: now[0]))
        assert [limiter.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    finally:
        shared.close()


# -- Baidu clients in cluster mode -------------------------------------------------------------------------


def test_a_baidu_client_pair_fetches_one_token_and_draws_no_18(connect) -> None:
    from core.infra.images import OCR_LIMITS, prepare

    receipt = prepare((DATA / "text" / "receipt.jpg").read_bytes(), OCR_LIMITS).data
    with FakeBaidu(qps_cap=20) as fake:
        # qps set to the cap itself, as the admin sets what Baidu sold: the client keeps its headroom under it
        # (calls spaced exactly at the cap draw an 18 whenever scheduling jitter bunches two of them); two
        # processes each spacing by itself (2 × 18 qps) draw many errors 18 here
        fake.qps_burst = 2
        config = fake.config(qps=20)
        clients = [BaiduClient.from_config(config, tokens=TokenService(shared=connect())) for _ in range(2)]
        assert all(isinstance(c.limiter, RedisRateLimiter) for c in clients)

        def call(i=itertools.count()) -> None:
            clients[next(i) % 2].ocr(receipt)

        assert run_threads(40, call) == [None] * 40
        assert fake.token_fetches == 1
        assert fake.errors_sent[18] == 0
        assert fake.count(OCR_PATH) == 40
        fake.revoke()  # Baidu rejects the token (110): one new token for both "processes"
        assert run_threads(10, call) == [None] * 10
        assert fake.token_fetches == 2
        assert fake.errors_sent[18] == 0


# -- the bot -------------------------------------------------------------------------------------------------


async def test_a_bot_with_cluster_redis_url_shares_tokens_and_qps(redis_server: RedisServer, fake_baidu: FakeBaidu):
    from tests import probe_plugin
    from tests.harness import Harness

    raw = redis_server.client()
    config = {"plugins": {"probe": {}}, "providers": {"baidu": fake_baidu.provider_config()}}
    try:
        alone = Harness(config, extra_plugins={"probe": probe_plugin})
        async with alone:
            assert alone.app.services.tokens.shared is None
            assert not isinstance(alone.app.services.provider("baidu").limiter, RedisRateLimiter)
        bot = Harness({**config, "cluster": {"redis_url": redis_server.url}}, extra_plugins={"probe": probe_plugin})
        async with bot:
            services = bot.app.services
            assert services.tokens.shared is not None and services.tokens.shared.prefix == "aipbot:"
            client = services.provider("baidu")
            assert isinstance(client.limiter, RedisRateLimiter) and client.limiter.shared is services.tokens.shared
            await services.run_blocking(services.tokens.get, client.token_key)
            assert raw.exists(f"aipbot:token:{client.token_key}")
    finally:
        for name in raw.scan_iter("aipbot:*"):
            raw.delete(name)
        raw.close()


# -- WeBank clients in cluster mode ---------------------------------------------------------------------------


def test_a_webank_client_pair_fetches_one_token_and_one_sign_ticket_never_a_shared_nonce(connect) -> None:
    from core.providers.webank import WebankClient
    from tests.fakes.webank import FakeWebank

    with FakeWebank(latency=0.05) as fake:
        clients = [WebankClient.from_config(fake.config(), tokens=TokenService(shared=connect())) for _ in range(2)]
        assert all(c is not None for c in clients)

        def call(i=itertools.count()) -> tuple[str, str]:
            client = clients[next(i) % 2]
            return client.sign_ticket(), client.nonce_ticket("user-1")

        results = run_threads(12, call)
        assert len({sign for sign, _ in results}) == 1
        assert len({nonce for _, nonce in results}) == 12  # single use: one fetch per launch, never cached
        assert fake.token_fetches == 1
        assert fake.ticket_fetches("SIGN") == 1
        assert fake.ticket_fetches("NONCE") == 12
        assert clients[0].sign_tickets() == clients[1].sign_tickets() == [results[0][0]]
