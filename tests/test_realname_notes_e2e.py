"""/verify with ``method: video_note`` end to end: the real python-telegram-bot stack on the fake Bot API, the real
Tencent and Baidu clients on their fakes, a real SQLite file (with its WAL), video notes made with OpenCV; and a real
``bot.py`` process killed with ``kill -9`` between the note and the answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import subprocess
from pathlib import Path

import pytest

from core.runtime.config import validate
from tests.fakes.tencent import FakeTencent
from tests.servers import bot_process
from tests.test_realname_e2e import rows, until
from tests.videos import video_note

ROOT = Path(__file__).resolve().parent.parent
USER = 1001
NAME = "韩梅梅"
ID_NUMBER = "11010519491231002X"
HTTP = {"connect_timeout": 2.0, "read_timeout": 10.0, "retries": 1, "backoff": 0.01}


@pytest.fixture(scope="module")
def note() -> bytes:
    return video_note(3.0, seed=11)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "aipbot.sqlite3"


def tencent_config(fake_telegram, fake_tencent, db: Path, **plugin) -> dict:
    return validate(
        {
            **fake_telegram.config(),
            "storage": {"path": str(db)},
            "providers": {"tencent": fake_tencent.provider_config()},
            "http": HTTP,
            "plugins": {"realname": {"method": "video_note", "provider": "tencent", "poll_seconds": 3600, **plugin}},
        }
    )


async def code_for(fake_telegram, fake) -> str:
    """/verify, the identity question and its answer; the code the bot asked to read (checked in its reply)."""
    fake_telegram.user_sends_text("/verify")
    question = await fake_telegram.bot_replied(USER)
    assert "18-digit ID number" in question.text
    answer = fake_telegram.user_sends_text(f"{NAME} {ID_NUMBER}")
    prompt = await fake_telegram.bot_replied(USER)
    assert (USER, answer["message_id"]) in fake_telegram.deleted
    code = fake.codes_issued[-1] if isinstance(fake, FakeTencent) else fake.session_codes[-1]
    assert code in prompt.text and "round camera button" in prompt.text
    return code


def search_everything(db: Path, log: str, note: bytes) -> list[str]:
    """Which of the note's bytes, its base64, the full name and the full ID number are in the SQLite files (the
    database and its WAL, as bytes and as a dump) or the log: the names of what was found."""
    import sqlite3

    encoded = base64.b64encode(note)
    needles = {
        "the note's bytes (start)": note[:64],
        "the note's bytes (middle)": note[len(note) // 2 : len(note) // 2 + 64],
        "the note's base64": encoded[:80],
        "the note's base64 (middle)": encoded[len(encoded) // 2 // 4 * 4 :][:80],
        "the name": NAME.encode(),
        "the ID number": ID_NUMBER.encode(),
    }
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump()).encode()
    found = [what for what, needle in needles.items() if needle in raw or needle in dump]
    found += [f"{what} in the log" for what, needle in needles.items() if needle.decode("latin-1") in log]
    return found


async def test_tencent_note_passes_once_and_nothing_of_it_is_kept(
    fake_telegram, fake_tencent, db, start_bot, note, caplog
):
    caplog.set_level(logging.INFO, logger="telegram")  # as bot.py sets it: PTB's DEBUG prints raw updates
    caplog.set_level(logging.DEBUG)  # then the root and the capture at DEBUG (restored after the test)
    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")
    await start_bot(tencent_config(fake_telegram, fake_tencent, db))
    code = await code_for(fake_telegram, fake_tencent)
    fake_tencent.set_video(note, "meimei", says=code)
    fake_telegram.user_sends_video_note(note, duration=3)
    answer = await fake_telegram.bot_replied(USER)
    assert answer.text.startswith("✅ Real-name verification passed.")
    assert "Name: 韩*" in answer.text and "ID number: 110***********002X" in answer.text
    assert fake_tencent.count("LivenessRecognition") == 1 and fake_tencent.seen[-1]["ValidateData"] == code
    [row] = rows(db)
    assert (row["state"], row["provider"], row["score"]) == ("passed", "tencent-note", 88.6)
    assert len(fake_telegram.calls_of("getFile")) == 1  # downloaded once, through the bot's download path
    await start_bot.stop()
    assert search_everything(db, caplog.text, note) == []
    assert fake_tencent.secret_key not in caplog.text
    assert "realname: note of user 1001 checked: passed" in caplog.text  # the capture did run at DEBUG/INFO
    passed = [c for c in fake_telegram.calls_of("sendMessage") if c.text and c.text.startswith("✅")]
    assert len(passed) == 1


async def test_over_telegram_a_forwarded_note_and_a_video_are_refused_before_any_call(
    fake_telegram, fake_tencent, db, start_bot, note
):
    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")
    await start_bot(tencent_config(fake_telegram, fake_tencent, db))
    code = await code_for(fake_telegram, fake_tencent)
    fake_tencent.set_video(note, "meimei", says=code)
    fake_telegram.user_sends_video_note(note, forwarded=True)
    assert "Forwarded video notes are not accepted" in (await fake_telegram.bot_replied(USER)).text
    fake_telegram.user_sends_video(note)
    assert "ordinary video, not a video note" in (await fake_telegram.bot_replied(USER)).text
    fake_telegram.user_sends_video_note(note, duration=50)
    assert "50 seconds long" in (await fake_telegram.bot_replied(USER)).text
    fake_telegram.user_sends_video_note(note, file_size=30 * 1024 * 1024)
    assert "too large" in (await fake_telegram.bot_replied(USER)).text
    assert fake_tencent.count("LivenessRecognition") == 0 and fake_telegram.calls_of("getFile") == []
    fake_telegram.user_sends_video_note(note)
    assert (await fake_telegram.bot_replied(USER)).text.startswith("✅")


async def test_a_note_with_no_verification_running_gets_the_usual_answer(
    fake_telegram, fake_tencent, db, start_bot, note
):
    await start_bot(tencent_config(fake_telegram, fake_tencent, db))
    fake_telegram.user_sends_video_note(note)
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text.startswith("Animations, videos and stickers can't be read")
    assert fake_tencent.count("GetLiveCode") == 0 and fake_telegram.calls_of("getFile") == []


async def test_baidu_note_end_to_end(fake_telegram, fake_baidu, db, start_bot, note, caplog):
    caplog.set_level(logging.INFO, logger="telegram")
    caplog.set_level(logging.DEBUG)
    fake_baidu.add_person(ID_NUMBER, NAME, "meimei")
    config = validate(
        {
            **fake_telegram.config(),
            "storage": {"path": str(db)},
            **fake_baidu.config(http=HTTP),
            "plugins": {"realname": {"method": "video_note", "provider": "baidu", "poll_seconds": 3600}},
        }
    )
    await start_bot(config)
    code = await code_for(fake_telegram, fake_baidu)
    fake_baidu.set_video(note, "meimei", says="9" if code != "9" else "8")  # misheard: a new code
    fake_telegram.user_sends_video_note(note)
    retry = await fake_telegram.bot_replied(USER)
    assert "not read clearly" in retry.text and fake_baidu.session_codes[-1] in retry.text
    fake_baidu.set_video(note, "meimei", says=fake_baidu.session_codes[-1])
    fake_telegram.user_sends_video_note(note)
    answer = await fake_telegram.bot_replied(USER)
    assert answer.text.startswith("✅") and "Face similarity: 92.5 / 100" in answer.text
    assert fake_baidu.token_fetches == 1
    await start_bot.stop()
    assert search_everything(db, caplog.text, note) == []


# -- kill -9 between the note and the answer ----------------------------------------------------------------


def start_process(fake_telegram, fake_tencent, tmp_path: Path, log: str) -> subprocess.Popen:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"telegram:\n  token: ${{TEST_BOT_TOKEN}}\n  base_url: {fake_telegram.base_url}\n"
        f"  base_file_url: {fake_telegram.base_file_url}\n  poll_timeout: 1\n"
        f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\n"
        "logging: {level: DEBUG}\n"
        f"http: {{connect_timeout: 2, read_timeout: 60, retries: 0}}\n"
        "providers:\n  tencent:\n"
        f"    secret_id: ${{TEST_TC_ID}}\n    secret_key: ${{TEST_TC_KEY}}\n    endpoint: {fake_tencent.endpoint}\n"
        "plugins:\n  realname: {method: video_note, provider: tencent, poll_seconds: 3600,\n"
        "             gate_chats: [-1001234567890]}\n"
    )
    secrets = {"TEST_TC_ID": fake_tencent.secret_id, "TEST_TC_KEY": fake_tencent.secret_key}
    return bot_process(config, tmp_path, tmp_path / log, TEST_BOT_TOKEN=fake_telegram.TOKEN, **secrets)


async def test_kill_9_between_the_note_and_the_answer_answers_and_approves_once_after_the_restart(
    fake_telegram, fake_tencent, tmp_path, note
):
    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")
    first = start_process(fake_telegram, fake_tencent, tmp_path, "bot1.log")
    second = None
    try:
        await fake_telegram.wait_for("getUpdates", timeout=60)
        fake_telegram.user_requests_to_join(-1001234567890)  # a verified-only group: approved once, after the restart
        assert "verified members only" in (await fake_telegram.bot_replied(USER)).text
        code = await code_for(fake_telegram, fake_tencent)
        fake_tencent.set_video(note, "meimei", says=code)
        fake_tencent.latency = 30.0  # the check is in flight when the bot dies
        fake_telegram.user_sends_video_note(note)
        await until(lambda: fake_tencent.count("LivenessRecognition") == 1, "the note reached Tencent", timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        fake_tencent.latency = 0.0
        passed = lambda: [c for c in fake_telegram.calls_of("sendMessage") if (c.text or "").startswith("✅")]  # noqa: E731
        assert passed() == []

        second = start_process(fake_telegram, fake_tencent, tmp_path, "bot2.log")
        await until(lambda: len(passed()) == 1, "the answer after the restart", timeout=60)
        await asyncio.sleep(1.0)  # a second answer would have been sent by now
        assert len(passed()) == 1
        await until(lambda: fake_telegram.join_answers, "the approval", timeout=30)
        assert fake_telegram.join_answers == [(-1001234567890, USER, "approved")]
        assert fake_tencent.count("LivenessRecognition") == 2  # the replayed note was checked again: acceptable
        second.send_signal(signal.SIGTERM)
        code_ = await asyncio.get_running_loop().run_in_executor(None, second.wait, 30)
        logs = (tmp_path / "bot1.log").read_text() + (tmp_path / "bot2.log").read_text()
        assert code_ == 0, logs[-3000:]
        assert "Traceback" not in logs
        db = tmp_path / "db.sqlite3"
        assert search_everything(db, logs, note) == []
        assert [(r["state"], r["provider"]) for r in rows(db)] == [("passed", "tencent-note")]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
