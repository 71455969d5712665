"""``method: video_note`` in cluster mode: two ``bot.py serve`` front ends and two ``bot.py worker`` workers as real
processes on a real Redis and PostgreSQL; the identity, the code and the note reach different processes, the
answer comes once, and nothing of the note, the name or the ID number is in the logs, Redis or PostgreSQL."""

from __future__ import annotations

import base64

import pytest
import redis

from tests.cluster import Cluster
from tests.fakes.tencent import FakeTencent
from tests.test_cluster import accepted_containing, until
from tests.videos import video_note

NAME, ID_NUMBER, USER = "韩梅梅", "11010519491231002X", 1001
GROUP = -1001234567890


@pytest.fixture
def fake_telegram():
    from http.server import ThreadingHTTPServer

    from tests.fakes.telegram import FakeTelegram

    ThreadingHTTPServer.request_queue_size = 128
    with FakeTelegram() as fake:
        yield fake


async def test_a_note_verified_across_front_ends_and_workers_is_answered_once_approved_once_and_kept_nowhere(
    tmp_path, fake_telegram, redis_server, postgres_server
):
    import psycopg

    note = video_note(3.0, seed=21)
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    database = postgres_server.database()
    with FakeTencent() as tencent:
        tencent.add_person(ID_NUMBER, NAME, "meimei")
        config = {
            "providers": {"tencent": tencent.provider_config()},
            "http": {"read_timeout": 10.0, "retries": 1},
            "plugins": {
                "realname": {"method": "video_note", "provider": "tencent", "poll_seconds": 3600, "gate_chats": [GROUP]}
            },
        }
        with Cluster(tmp_path, fake_telegram, url, database=database, **config) as running:
            running.start(fronts=2, workers=2)
            await running.ready()
            fake_telegram.user_requests_to_join(GROUP, title="Verified club", bio="my own words", user_id=USER)
            await until(lambda: accepted_containing(fake_telegram, "Verified club"), 60, "the prompt", running)
            fake_telegram.user_sends_text("/verify", user_id=USER)
            await until(lambda: accepted_containing(fake_telegram, "18-digit ID number"), 60, "the question", running)
            fake_telegram.user_sends_text(f"{NAME} {ID_NUMBER}", user_id=USER)
            await until(lambda: accepted_containing(fake_telegram, "round camera button"), 60, "the code", running)
            code = tencent.codes_issued[-1]
            tencent.set_video(note, "meimei", says=code)
            fake_telegram.user_sends_video_note(note, user_id=USER)
            await until(lambda: accepted_containing(fake_telegram, "✅ Real-name"), 60, "the answer", running)
            fake_telegram.user_sends_text("/verify status", user_id=USER)  # something after it, to let a twin show
            await until(lambda: accepted_containing(fake_telegram, "(The confirmed"), 60, "the status", running)
            answers = [c for c in fake_telegram.calls_of("sendMessage") if (c.text or "").startswith("✅ Real-name")]
            assert len(answers) == 2  # the answer once, and the status
            assert sum("Reference" in c.text and "Name: 韩*" in c.text for c in answers) == 1
            assert {d.url for d in fake_telegram.deliveries} == {running.url(0), running.url(1)}
            assert tencent.count("LivenessRecognition") == 1
            await until(lambda: fake_telegram.join_answers, 60, "the approval", running)
            assert fake_telegram.join_answers == [(GROUP, USER, "approved")]  # once, from whichever worker
            logs = running.logs(tail=10**8)
    encoded = base64.b64encode(note)
    needles = [NAME.encode(), ID_NUMBER.encode(), note[:64], note[len(note) // 2 :][:64], encoded[:80]]
    assert not [n for n in needles if n.decode("latin-1") in logs]
    client = redis.Redis.from_url(url)
    for key in client.keys("*"):
        dumped = client.dump(key) or b""
        assert not [n for n in needles if n in dumped], key
    with psycopg.connect(database) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            content = str(conn.execute(f'SELECT * FROM "{table}"').fetchall()).encode()
            assert not [n for n in [*needles[:2], encoded[:80], b"my own words"] if n in content], table
