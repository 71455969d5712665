"""Cluster mode end to end: two ``bot.py serve`` front ends and two ``bot.py worker`` workers as real processes.

The fake Bot API delivers webhook updates to the two front ends in turn (a load balancer), with Telegram's flood
control on; the fake Baidu caps QPS. The processes share a real ``redis-server`` (state, Celery's broker, tokens,
QPS and send-rate budgets) and a real PostgreSQL (the journal, the outbox, quotas). A worker is killed with
SIGKILL (its whole process group) in the middle of the load.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.cluster import Cluster, processes
from tests.fakes.baidu import FakeBaidu
from tests.test_intake_process import accepted

DATA = Path(__file__).resolve().parent.parent / "examples"
OCR_PATH = "/rest/2.0/ocr/v1/general_basic"
MATCH_PATH = "/rest/2.0/face/v3/match"
RECEIPT = ["Coffee shop receipt", "Total 68.50"]
USERS = [5000 + i for i in range(40)]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def fake_telegram():
    from http.server import ThreadingHTTPServer

    from tests.fakes.telegram import FakeTelegram

    ThreadingHTTPServer.request_queue_size = 128  # four bots' connections at once
    with FakeTelegram() as fake:
        fake.limit_rate(per_chat=1, overall=30)  # Telegram's flood control
        yield fake


@pytest.fixture
def baidu():
    with FakeBaidu(qps_cap=20) as fake:
        fake.qps_burst = 2
        yield fake


@pytest.fixture
def cluster(tmp_path, fake_telegram, baidu, redis_server, postgres_server):
    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own: the default key prefix, a clean slate
    redis.Redis.from_url(url).flushdb()
    config = {
        **baidu.config(qps=18, http={"read_timeout": 10.0}),
        "plugins": {"ocr": {"engine": "baidu"}, "facematch": {"engine": "baidu", "picture": False}},
    }
    config["workers"] = {"io": 8, "cpu": 1}
    with Cluster(tmp_path, fake_telegram, url, database=postgres_server.database(), **config) as running:
        running.start(fronts=2, workers=2)
        yield running


def flood_refusals(fake) -> int:
    return sum(1 for m in ("sendMessage", "sendPhoto", "sendDocument") for c in fake.calls_of(m) if c.fault == "rate")


async def until(check, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout} s: {what}\n{cluster.logs()}")
        await asyncio.sleep(0.05)


async def test_forty_users_are_each_answered_once_though_a_worker_is_killed_mid_load(cluster, fake_telegram, baidu):
    image = read("text/receipt.jpg")
    baidu.set_text(image, RECEIPT)
    await cluster.ready()
    for user in USERS:
        fake_telegram.user_sends_photo(image, caption="/ocr", user_id=user)
    answer = "\n".join(RECEIPT)
    await until(lambda: len(accepted(fake_telegram, answer)) >= 10, 90, "10 users answered", cluster)
    # both workers inside a Baidu call (each holds one chat at a time): the killed one has sent nothing for its chat
    arrived = baidu.count(OCR_PATH)
    baidu.inject(stall=4, times=2, path=OCR_PATH)
    await until(lambda: baidu.count(OCR_PATH) >= arrived + 2, 30, "both workers calling Baidu", cluster)
    cluster.kill_worker(0)
    await until(lambda: len(accepted(fake_telegram, answer)) == len(USERS), 120, "every user answered", cluster)
    await asyncio.sleep(2.0)  # a second answer would come now
    assert accepted(fake_telegram, answer) == dict.fromkeys(USERS, 1)
    deliveries = fake_telegram.deliveries
    assert {d.url for d in deliveries} == {cluster.url(0), cluster.url(1)}  # both front ends took updates
    assert all(d.ok for d in deliveries)
    assert baidu.token_fetches == 1  # one token for the whole cluster
    assert baidu.errors_sent[18] == 0  # one QPS budget for the whole cluster
    assert flood_refusals(fake_telegram) == 0  # one set of send rates for the whole cluster
    log = cluster.workers[1][1].read_text()
    assert "Traceback" not in log, log[-3000:]


async def test_an_album_and_a_facematch_split_across_front_ends_are_each_answered_once(cluster, fake_telegram, baidu):
    a, b = read("faces/obama_1.jpg"), read("faces/obama_2.jpg")
    baidu.set_face(a, "obama")
    baidu.set_face(b, "obama")
    page1, page2 = read("text/receipt.jpg"), read("text/en_line.png")
    baidu.set_text(page1, RECEIPT)
    baidu.set_text(page2, ["Hello TSINGTAO 2026"])
    await cluster.ready()

    fake_telegram.user_sends_album([page1, page2], caption="/ocr", user_id=71)
    fake_telegram.user_sends_text("/facematch", user_id=72)
    fake_telegram.user_sends_photo(a, user_id=72)
    fake_telegram.user_sends_photo(b, user_id=72)

    def answers(chat: int) -> list[str]:
        return [c.text for c in fake_telegram.calls_of("sendMessage") if c.chat_id == chat and not c.fault]

    await until(lambda: any("92.5" in t for t in answers(72)), 60, "the faces compared", cluster)
    await until(lambda: any("TSINGTAO" in t for t in answers(71)), 60, "the album read", cluster)
    await asyncio.sleep(2.0)
    photos = {}  # chat -> the front ends its photos reached
    for d in fake_telegram.deliveries:
        if "photo" in d.update["message"]:
            photos.setdefault(d.update["message"]["chat"]["id"], set()).add(d.url)
    assert photos[71] == {cluster.url(0), cluster.url(1)}  # the album's two parts reached different front ends
    assert photos[72] == {cluster.url(0), cluster.url(1)}  # and so did the two faces
    album = [t for t in answers(71)]
    assert len(album) == 1 and "Coffee shop receipt" in album[0] and "TSINGTAO" in album[0], album
    faces = answers(72)
    assert len([t for t in faces if "92.5" in t]) == 1 and "first photo" in faces[1], faces
    assert baidu.count(MATCH_PATH) == 1
    codes = cluster.stop()  # SIGTERM: every process ends cleanly
    assert codes == dict.fromkeys(["front0.log", "front1.log", "worker0.log", "worker1.log"], 0), cluster.logs()
    assert "Traceback" not in cluster.logs(tail=10**6)


# -- starting a cluster process ------------------------------------------------------------------------------------


def run_bot(tmp_path: Path, config: str, *args: str) -> tuple[int, str]:
    import subprocess
    import sys

    from tests.cluster import ROOT

    path = tmp_path / "config.yaml"
    path.write_text(config)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TEST_BOT_TOKEN": "123:abc"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), *args, "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    return done.returncode, done.stderr


WEBHOOK = (
    "telegram: {token: '${TEST_BOT_TOKEN}', mode: webhook}\n"
    "server: {port: 0, public_url: 'https://bot.example.org'}\n"
    "storage: {path: db.sqlite3}\n"
)


def test_serve_without_redis_says_what_is_missing_in_one_line(tmp_path):
    code, err = run_bot(tmp_path, WEBHOOK, "serve")
    assert code == 2
    expected = "cluster.redis_url: bot.py serve needs Redis (the shared state and Celery's broker)"
    assert err.strip() == f"aipbot: configuration error: {expected}"


def test_serve_in_polling_mode_is_refused_in_one_line(tmp_path, redis_server):
    code, err = run_bot(
        tmp_path,
        f"telegram: {{token: x}}\ncluster: {{redis_url: '{redis_server.url}'}}\nstorage: {{path: db.sqlite3}}\n",
        "serve",
    )
    assert code == 2 and err.strip().endswith(
        "telegram.mode: bot.py serve is a webhook front end: set telegram.mode: webhook"
    )


def test_a_broker_that_does_not_answer_is_a_one_line_error_without_its_password(tmp_path, redis_server):
    config = WEBHOOK + f"cluster: {{redis_url: '{redis_server.url}', broker_url: 'redis://:s3cret@127.0.0.1:1/0'}}\n"
    code, err = run_bot(tmp_path, config, "worker")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cluster.broker_url: cannot connect to redis://:***@127.0.0.1:1/0" in err and "s3cret" not in err


def test_worker_check_loads_the_plugins_and_exits(tmp_path, redis_server):
    code, err = run_bot(tmp_path, WEBHOOK + f"cluster: {{redis_url: '{redis_server.url}'}}\n", "worker", "--check")
    assert code == 0 and "configuration OK" in err, err


def children_of(pid: int) -> list[int]:
    return [child for child, _, _, parent, _ in processes() if parent == pid]


async def test_a_worker_process_killed_mid_job_has_its_update_answered_once_by_its_replacement(
    tmp_path, fake_telegram, baidu, redis_server, postgres_server
):
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    image = read("text/receipt.jpg")
    baidu.set_text(image, RECEIPT)
    config = {**baidu.config(qps=18, http={"read_timeout": 10.0}), "plugins": {"ocr": {"engine": "baidu"}}}
    # neither the sweep nor the broker's redelivery comes in time: only the pool's requeue and the task's retry
    slow = {"sweep_seconds": 300, "visibility_timeout": 300}
    with Cluster(tmp_path, fake_telegram, url, database=postgres_server.database(), cluster=slow, **config) as one:
        one.start(fronts=1, workers=1)
        await one.ready()
        baidu.inject(stall=3, times=1, path=OCR_PATH)
        fake_telegram.user_sends_photo(image, caption="/ocr", user_id=77)
        await until(lambda: baidu.count(OCR_PATH) >= 1, 30, "the worker calling Baidu", one)
        main = one.workers[0][0].pid
        (child,) = children_of(main)
        os.kill(child, signal.SIGKILL)  # the pool process dies; Celery's main process lives on
        answer = "\n".join(RECEIPT)
        await until(lambda: accepted(fake_telegram, answer), 60, "the update answered", one)
        await asyncio.sleep(2.0)
        assert accepted(fake_telegram, answer) == {77: 1}
        assert "SIGKILL" in one.workers[0][1].read_text()  # Celery saw its pool process die


async def test_a_webank_identity_answer_reaching_a_front_end_is_read_by_a_worker_and_stored_nowhere(
    tmp_path, fake_telegram, fake_webank, redis_server, postgres_server
):
    import psycopg

    name, id_number, user = "李雷", "370102199001015822", 1001
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    database = postgres_server.database()
    config = {**fake_webank.config(), "plugins": {"realname": {"provider": "webank", "poll_seconds": 3600}}}
    with Cluster(tmp_path, fake_telegram, url, database=database, **config) as running:
        running.start(fronts=2, workers=1)
        await running.ready()
        fake_telegram.user_sends_text("/verify", user_id=user)
        await until(lambda: accepted_containing(fake_telegram, "18-digit ID number"), 60, "the question", running)
        answer = fake_telegram.user_sends_text(f"{name} {id_number}", user_id=user)
        await until(lambda: accepted_containing(fake_telegram, "Tap the button now"), 60, "the link", running)
        [order] = fake_webank.orders.values()
        assert (order.name, order.id_no) == (name, id_number)  # it reached WeBank, through the worker
        assert (user, answer["message_id"]) in fake_telegram.deleted  # and left the chat
        fronts = {d.url for d in fake_telegram.deliveries}
        assert fronts == {running.url(0), running.url(1)}
        logs = running.logs(tail=10**7)
    # never journaled: handed over by the front end, sealed, through Redis
    assert re.search(r"update \d+: its withheld text came from the front end", logs)
    for secret in (name, id_number, id_number[-6:]):
        assert secret not in logs
        for key in redis.Redis.from_url(url).keys("*"):
            assert secret.encode() not in (redis.Redis.from_url(url).dump(key) or b"")
        with psycopg.connect(database) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for table in tables:
                assert secret not in str(conn.execute(f'SELECT * FROM "{table}"').fetchall()), table


def accepted_containing(fake, text: str) -> bool:
    return any(text in (c.text or "") for c in fake.calls_of("sendMessage") if not c.fault)
