"""The durable records on both databases: the same code on a SQLite file and on a real PostgreSQL server.

Every test taking ``store_target`` runs twice (``[sqlite]``, ``[postgresql]``: a fresh database of the
session's ``postgres_server``); those taking ``postgres_server`` alone show what only a shared server can
show (two stores, as two processes of one bot would hold them).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Double, Index, MetaData, Table, Text, inspect, select, text

from core.contract.chat import Reply
from core.infra.redact import redact
from core.infra.store import Store, StoreUnavailable
from core.pipeline.journal import TABLES, Journal, intake
from core.runtime.app import _open_store
from core.runtime.config import ConfigError, validate
from core.sending.outbox import DELIVERED, FAILED, QUEUED, Outbox, outbox
from plugins.realname.sessions import PENDING, Session, SessionStore, new_id

BIG = 2**40 + 7  # more than 32 bits: Telegram's chat ids of supergroups are -100xxxxxxxxxx
PRECISE = 1764590400.123456  # a Unix time with microseconds


# ---------------------------------------------------------------------------------------------- quotas
def test_quotas_count_up_to_the_limit_and_forget_earlier_days(store_target):
    store = Store(store_target)
    try:
        assert store.use_quota(BIG, "ocr", "2026-12-01", 2)
        assert store.use_quota(BIG, "ocr", "2026-12-01", 2)
        assert not store.use_quota(BIG, "ocr", "2026-12-01", 2)
        assert not store.use_quota(5, "ocr", "2026-12-01", 0)
        assert store.quota_used(BIG, "ocr", "2026-12-01") == 2
        assert store.use_quota(5, "ocr", "2026-12-02", 2)  # a new day: yesterday's rows go
        assert store.quota_used(BIG, "ocr", "2026-12-01") == 0
        assert store.execute(text("SELECT user_id FROM quota_use")) == [(5,)]
    finally:
        store.close()


def test_quota_counting_from_many_threads_and_two_stores_is_exact(store_target):
    stores = [Store(store_target), Store(store_target)]
    start = threading.Barrier(8)

    def use(i: int) -> int:
        start.wait()
        return sum(stores[i % 2].use_quota(BIG, "ocr", "2026-12-01", 50) for _ in range(20))

    try:
        with ThreadPoolExecutor(8) as pool:
            counted = sum(pool.map(use, range(8)))
        assert counted == 50
        assert stores[0].quota_used(BIG, "ocr", "2026-12-01") == 50
    finally:
        for store in stores:
            store.close()


def test_forgetting_a_user_deletes_their_rows_everywhere(store_target):
    store = Store(store_target)
    notes = Table("notes", MetaData(), Column("user_id", BigInteger), Column("note", Text))
    try:
        store.create(notes)
        store.execute(notes.insert().values(user_id=BIG, note="x"))
        store.execute(notes.insert().values(user_id=7, note="y"))
        assert store.use_quota(BIG, "ocr", "2026-12-01", 5)
        assert store.forget_user(BIG, tables=("notes",)) == 2
        assert store.execute(select(notes.c.user_id)) == [(7,)]
        assert store.quota_used(BIG, "ocr", "2026-12-01") == 0
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------- the schema
def test_the_schema_is_created_once_and_an_older_table_gets_its_new_column_and_index(store_target):
    store = Store(store_target)
    try:
        store.create(intake)
        store.create(intake)  # a second start changes nothing
        old = Table("things", MetaData(), Column("id", Text, primary_key=True), Column("at", Double, nullable=False))
        store.create(old)
        store.execute(old.insert().values(id="a", at=PRECISE))
        newer = Table(
            "things",
            MetaData(),
            Column("id", Text, primary_key=True),
            Column("at", Double, nullable=False),
            Column("ref", Text),
            Index("things_ref", "ref", unique=True),
        )
        store.create(newer)
        store.create(newer)
        assert store.execute(select(newer)) == [("a", PRECISE, None)]
        indexes = store.transaction(lambda db: [i["name"] for i in inspect(db).get_indexes("things")])
        assert "things_ref" in indexes
        must = Table(
            "things", MetaData(), Column("id", Text, primary_key=True), Column("n", BigInteger, nullable=False)
        )
        with pytest.raises(StoreUnavailable, match=r"cannot add the column things\.n"):
            store.create(must)
    finally:
        store.close()


def test_an_old_sqlite_file_without_return_ref_opens_and_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE realname_sessions (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, chat_id INTEGER NOT NULL,"
            " lang TEXT NOT NULL, provider TEXT NOT NULL, reference TEXT NOT NULL, state TEXT NOT NULL, score REAL,"
            " liveness REAL, spoofing REAL, created_at REAL NOT NULL, expires_at REAL NOT NULL, checked_at REAL,"
            " finished_at REAL, notified_at REAL)"
        )
        conn.execute(
            "INSERT INTO realname_sessions (id, user_id, chat_id, lang, provider, reference, state, created_at,"
            " expires_at) VALUES ('s1', 1, 1, 'en', 'baidu', 'vt1', 'pending', 0, 7200)"
        )
    conn.close()
    store = Store(path)
    try:
        sessions = SessionStore(store)
        assert sessions.get("s1").return_ref is None
        sessions.create(_session("s2", ref="r2"))
        assert sessions.by_return_ref("r2").id == "s2"
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(realname_sessions)")]
    conn.close()
    assert "realname_sessions_return" in indexes


# ---------------------------------------------------------------------------------------------- the journal
def test_the_journal_records_each_update_once_and_keeps_big_ids_and_precise_times(store_target):
    store = Store(store_target)
    try:
        store.create(*TABLES)
        rows = [(2**33, "chat:-1001234567890", '{"a": 1}'), (2**33 + 1, None, "{}")]
        assert store.transaction(lambda db: Journal.record(db, PRECISE, rows)) == [2**33, 2**33 + 1]
        assert store.transaction(lambda db: Journal.record(db, PRECISE + 1, rows[:1])) == []
        assert store.execute(select(intake.c.update_id, intake.c.received).order_by(intake.c.update_id)) == [
            (2**33, PRECISE),
            (2**33 + 1, PRECISE),
        ]
        assert store.transaction(lambda db: Journal.reopen(db, PRECISE + 2)) == [
            (2**33, '{"a": 1}', 1),
            (2**33 + 1, "{}", 1),
        ]
        store.transaction(lambda db: Journal.replied(db, PRECISE, 2**33, 0, BIG))
        store.transaction(lambda db: Journal.replied(db, PRECISE, 2**33, 0, BIG + 1))  # the later mark wins
        assert store.transaction(lambda db: Journal.replies(db, PRECISE, 2**33)) == {0: BIG + 1}
        store.transaction(lambda db: Journal.finish(db, PRECISE + 3, [2**33]))
        assert store.execute(select(intake.c.body, intake.c.done).where(intake.c.update_id == 2**33)) == [
            (None, PRECISE + 3)
        ]
        assert store.transaction(lambda db: Journal.prune(db, PRECISE + 3 + 25 * 3600)) == 1
        assert store.transaction(lambda db: Journal.replies(db, PRECISE, 2**33)) == {}
    finally:
        store.close()


def test_two_stores_recording_the_same_updates_at_once_record_each_once(postgres_server):
    url = postgres_server.database()
    stores = [Store(url) for _ in range(4)]
    stores[0].create(*TABLES)
    start = threading.Barrier(4)
    rows = [(1000 + i, "chat:1", "{}") for i in range(50)]

    def record(store: Store) -> list[int]:
        start.wait()
        return store.transaction(lambda db: Journal.record(db, PRECISE, rows))

    try:
        with ThreadPoolExecutor(4) as pool:
            recorded = [i for ids in pool.map(record, stores) for i in ids]
        assert sorted(recorded) == [1000 + i for i in range(50)]
    finally:
        for store in stores:
            store.close()


# ---------------------------------------------------------------------------------------------- the outbox
class Transport:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[int, str]] = []
        self.fail = fail

    async def send(self, chat_id: int, reply: Reply) -> int:
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("network down")
        self.sent.append((chat_id, reply.text))
        return len(self.sent)


class Services:
    """What the outbox needs of ``BotServices``: its store, a database thread, the transport, its config."""

    def __init__(self, store: Store, transport: Transport | None) -> None:
        self.store, self.transport = store, transport
        self.config = validate({})
        self._pool = ThreadPoolExecutor(1)

    async def run_db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args))

    def close(self) -> None:
        self._pool.shutdown()
        self.store.close()


async def test_the_outbox_delivers_once_per_key_retries_and_keeps_big_chat_ids(store_target):
    services = Services(Store(store_target), Transport(fail=1))
    box = Outbox(services, clock=lambda: PRECISE)
    try:
        assert await box.put(-BIG, Reply("hello"), key="k1")
        assert not await box.put(-BIG, Reply("hello again"), key="k1")
        assert await box.state("k1") == QUEUED  # the first try failed: queued for a retry
        rows = services.store.execute(select(outbox.c.chat_id, outbox.c.created, outbox.c.attempts))
        assert rows == [(-BIG, PRECISE, 1)]
        box.clock = lambda: PRECISE + 3600
        assert await box.drain() == 1
        assert await box.state("k1") == DELIVERED
        assert services.transport.sent == [(-BIG, "hello")]
        assert services.store.execute(select(outbox.c.reply)) == [(None,)]
        assert await box._next_due() is None
    finally:
        services.close()


async def test_a_message_refused_for_good_is_given_up(store_target):
    class BadRequest(Exception):
        pass

    class Refusing(Transport):
        async def send(self, chat_id: int, reply: Reply) -> int:
            raise BadRequest("chat not found")

    services = Services(Store(store_target), Refusing())
    box = Outbox(services)
    try:
        assert await box.put(1, Reply("x"), key="k")
        assert await box.state("k") == FAILED
    finally:
        services.close()


async def test_two_outboxes_on_one_database_deliver_each_message_once(postgres_server):
    url = postgres_server.database()
    transports = [Transport(), Transport(), Transport()]
    senders = [Services(Store(url), t) for t in transports]
    boxes = [Outbox(s) for s in senders]
    try:

        def queue(db: Any) -> None:
            for i in range(60):
                boxes[0].put_in(db, 1000 + i, Reply(f"m{i}"), key=f"k{i}")

        senders[0].store.transaction(queue)
        delivered = await asyncio.gather(*(box.drain() for box in boxes))
        assert sum(delivered) == 60
        texts = sorted(text for t in transports for _, text in t.sent)
        assert texts == sorted(f"m{i}" for i in range(60))
        assert senders[0].store.execute(select(outbox.c.state).distinct()) == [(DELIVERED,)]
    finally:
        for services in senders:
            services.close()


# ---------------------------------------------------------------------------------------------- sessions
def _session(session_id: str, *, ref: str | None = None, created: float = PRECISE) -> Session:
    return Session(
        session_id, BIG, -BIG, "en", "baidu", "vt", PENDING, None, None, None, created, created + 7200, return_ref=ref
    )


def test_sessions_round_trip_and_finish_once(store_target):
    store = Store(store_target)
    try:
        sessions = SessionStore(store)
        first, second = _session(new_id(), ref="r1"), _session(new_id(), created=PRECISE + 0.5)
        sessions.create(first)
        sessions.create(second)
        assert sessions.get(first.id) == first and sessions.by_return_ref("r1") == first
        assert sessions.latest(BIG) == second and sessions.pending_of(BIG) == second
        assert sessions.finish(first.id, "passed", 91.5, 0.99, 0.001, PRECISE + 10)
        assert not sessions.finish(first.id, "failed", 1.0, 0.0, 1.0, PRECISE + 11)
        assert not sessions.close(first.id, "expired", PRECISE + 12)
        assert sessions.get(first.id).score == 91.5 and sessions.get(first.id).finished_at == PRECISE + 10
        assert sessions.counts()["passed"] == 1 and sessions.counts()[PENDING] == 1
        assert [s.id for s in sessions.unnotified(PRECISE + 20)] == [first.id]
        assert [s.id for s in sessions.recent()] == [second.id, first.id]
        assert sessions.purge(before=PRECISE + 11) == 1
        assert sessions.forget(BIG) == 1 and sessions.get(second.id) is None
    finally:
        store.close()


def test_two_stores_finishing_one_session_at_once_have_one_winner(postgres_server):
    url = postgres_server.database()
    stores = [Store(url) for _ in range(6)]
    views = [SessionStore(store) for store in stores]
    ids = [new_id() for _ in range(20)]
    for session_id in ids:
        views[0].create(_session(session_id))
    start = threading.Barrier(6)

    def finish(i: int) -> int:
        start.wait()
        won = 0
        for session_id in ids:
            if i % 2:
                won += views[i].finish(session_id, "passed", 90.0, 0.9, 0.0, PRECISE + i)
            else:
                won += views[i].close(session_id, "expired", PRECISE + i)
        return won

    try:
        with ThreadPoolExecutor(6) as pool:
            assert sum(pool.map(finish, range(6))) == len(ids)
    finally:
        for store in stores:
            store.close()


# ---------------------------------------------------------------------------------------------- URLs
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://bot:s3cretpw@db/aipbot", "must be a postgresql:// or postgresql+psycopg:// URL (got '…@db/aipbot')"),
        ("postgresql://bot:s3cretpw@db.example", "names no database"),
        ("redis://:s3cretpw@127.0.0.1:6379/0", "must be a postgresql:// or postgresql+psycopg:// URL"),
        ("postgres://bot:s3cretpw@db/aipbot", "must be a postgresql:// or postgresql+psycopg:// URL"),
    ],
)
def test_a_bad_database_url_is_one_line_naming_the_key_without_the_password(url, problem):
    with pytest.raises(ConfigError) as caught:
        validate({"cluster": {"database_url": url}})
    message = str(caught.value)
    assert message.startswith(f"cluster.database_url: {problem}")
    assert "\n" not in message and "s3cretpw" not in message


def test_a_database_server_that_does_not_answer_at_start_is_one_line_without_the_password(tmp_path):
    port = _closed_port()
    url = f"postgresql://bot:s3cretpw@127.0.0.1:{port}/aipbot"
    assert validate({"cluster": {"database_url": url}})["cluster"]["database_url"] == url
    assert "s3cretpw" not in redact(f"connecting to {url}")  # the password is registered for the logs
    with pytest.raises(ConfigError) as caught:
        _open_store(str(tmp_path / "db"), "", url)
    message = str(caught.value)
    assert message.startswith(f"cluster.database_url: cannot connect to postgresql+psycopg://bot:***@127.0.0.1:{port}")
    assert "\n" not in message and "s3cretpw" not in message and "Connection refused" in message


def test_a_store_never_shows_its_password(postgres_server):
    url = postgres_server.database().replace("postgres@", "postgres:s3cretpw@")  # trust: any password works
    store = Store(url)
    try:
        assert "s3cretpw" not in repr(store) and "s3cretpw" not in store.path and "s3cretpw" not in repr(store.engine)
        assert store.dialect == "postgresql" and store.path.startswith("postgresql+psycopg://postgres:***@")
    finally:
        store.close()


def test_open_store_uses_postgresql_when_a_database_url_is_given(postgres_server, tmp_path):
    store, state = _open_store(str(tmp_path / "db"), "", postgres_server.database())
    try:
        assert store.dialect == "postgresql"
    finally:
        store.close()
        state.close()


async def test_a_live_senders_lease_is_respected_and_a_dead_senders_is_taken_over(postgres_server, redis_server):
    """Cluster mode: two outboxes on one database and one Redis. A's lease stands while A's heartbeat does; once it
    is gone (A killed: no beat for three periods) B sends A's message without waiting for the lease to lapse."""
    from core.infra.state.redis import RedisState
    from core.sending import leases

    url, prefix = postgres_server.database(), redis_server.prefix()
    hung = asyncio.Event()

    class Hanging(Transport):
        async def send(self, chat_id: int, reply: Reply) -> int:
            hung.set()
            await asyncio.sleep(3600)  # the send never returns: A is "killed" while it hangs
            return 0

    a, b = Services(Store(url), Hanging()), Services(Store(url), Transport())
    for services in (a, b):
        services.config = validate({"cluster": {"redis_url": redis_server.url, "database_url": url}})
        services.state = RedisState(redis_server.url, prefix=prefix)
    box_a, box_b = Outbox(a), Outbox(b)
    box_a.leases.owner = box_a.owner = "other-host:4242:0a1b2c3d"  # another machine: only its heartbeat tells
    try:
        await box_a.leases.beat()  # A is alive
        put = asyncio.ensure_future(box_a.put(7, Reply("result"), key="r1"))
        await asyncio.wait_for(hung.wait(), 10)
        owner, sending = a.store.execute(select(outbox.c.owner, outbox.c.sending))[0]
        assert owner == box_a.owner and sending is not None
        assert await box_b.leases.take_over() == 0  # a live owner's lease is respected
        assert await box_b.drain() == 0 and b.transport.sent == []

        put.cancel()  # A dies: no more heartbeats, and its key lapses (here: deleted, as BEAT_TTL would)
        await asyncio.gather(put, return_exceptions=True)
        await a.state.delete(f"outbox:owner:{box_a.owner}")
        assert await box_b.leases.take_over() == 1
        assert await box_b.drain() == 1
        assert b.transport.sent == [(7, "result")]
        assert await box_b.state("r1") == DELIVERED
        assert leases.BEAT_TTL <= 10  # a dead sender's message waits seconds, not the 60 s lease
    finally:
        for services in (a, b):
            services.state.close()
            services.close()
