"""Verified-only groups end to end: a ``chat_join_request`` on the fake Bot API, the private prompt, ``/verify`` with a
video note on the fake Tencent FaceID, then ``approveChatJoinRequest`` exactly once — or ``declineChatJoinRequest``
on a failure or when the user does not finish in time; a decision a failure cut off is retried by the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.runtime.config import validate
from tests.test_realname_e2e import until
from tests.videos import video_note

USER = 1001
GROUP = -1001234567890
NAME, ID_NUMBER = "韩梅梅", "11010519491231002X"


@pytest.fixture(scope="module")
def note() -> bytes:
    return video_note(2.0, seed=31)


@pytest.fixture
def config(fake_telegram, fake_tencent, tmp_path):
    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")

    def make(**plugin) -> dict:
        realname = {"method": "video_note", "provider": "tencent", "poll_seconds": 3600, "gate_chats": [GROUP]}
        return validate(
            {
                **fake_telegram.config(),
                "storage": {"path": str(Path(tmp_path) / "db.sqlite3")},
                "providers": {"tencent": fake_tencent.provider_config()},
                "http": {"read_timeout": 10.0, "retries": 1},
                "plugins": {"realname": {**realname, **plugin}},
            }
        )

    return make


def verifier(transport):
    return transport.app.plugins.pm.get_plugin("realname").verifier


async def verify_with_note(fake_telegram, fake_tencent, note, *, id_number: str = ID_NUMBER) -> str:
    fake_telegram.user_sends_text("/verify")
    await fake_telegram.bot_replied(USER)
    fake_telegram.user_sends_text(f"{NAME} {id_number}")
    await fake_telegram.bot_replied(USER)
    fake_tencent.set_video(note, "meimei", says=fake_tencent.codes_issued[-1])
    fake_telegram.user_sends_video_note(note)
    return (await fake_telegram.bot_replied(USER)).text


async def test_a_join_request_is_approved_once_the_user_passes(fake_telegram, fake_tencent, start_bot, config, note):
    transport = await start_bot(config())
    fake_telegram.user_requests_to_join(GROUP, title="Verified club")
    prompt = await fake_telegram.bot_replied(USER)
    assert "Verified club" in prompt.text and "within 15 minutes" in prompt.text
    assert prompt.buttons[0][0]["url"] == f"https://t.me/{fake_telegram.bot_username}?start=verify-go"
    assert fake_telegram.join_answers == []
    answer = await verify_with_note(fake_telegram, fake_tencent, note)
    assert answer.startswith("✅")
    await until(lambda: fake_telegram.join_answers, "the approval")
    assert fake_telegram.join_answers == [(GROUP, USER, "approved")]
    # a second verdict, or the job, approves nothing more
    assert (await verify_with_note(fake_telegram, fake_tencent, note)).startswith("✅")
    await verifier(transport).poll()
    assert fake_telegram.join_answers == [(GROUP, USER, "approved")]
    assert fake_telegram.calls_of("declineChatJoinRequest") == []
    assert len(fake_telegram.calls_of("approveChatJoinRequest")) == 1


async def test_a_user_verified_before_is_approved_at_once(fake_telegram, fake_tencent, start_bot, config, note):
    await start_bot(config())
    assert (await verify_with_note(fake_telegram, fake_tencent, note)).startswith("✅")
    fake_telegram.user_requests_to_join(GROUP, title="Verified club")
    welcome = await fake_telegram.bot_replied(USER)
    assert "You are verified already" in welcome.text and "Verified club" in welcome.text
    assert fake_telegram.join_answers == [(GROUP, USER, "approved")]
    assert fake_tencent.count("LivenessRecognition") == 1  # no new check


async def test_a_failed_verification_declines(fake_telegram, fake_tencent, start_bot, config, note):
    await start_bot(config())
    fake_telegram.user_requests_to_join(GROUP)
    await fake_telegram.bot_replied(USER)
    answer = await verify_with_note(fake_telegram, fake_tencent, note, id_number="110105198001011238")
    assert answer.startswith("❌") and "No ID record matches" in answer
    await until(lambda: fake_telegram.join_answers, "the decline")
    assert fake_telegram.join_answers == [(GROUP, USER, "declined")]


async def test_a_user_who_does_not_finish_in_time_is_declined_by_the_job(fake_telegram, start_bot, config):
    transport = await start_bot(config(gate_minutes=5))
    fake_telegram.user_requests_to_join(GROUP)
    await fake_telegram.bot_replied(USER)
    gate = verifier(transport).gate
    await verifier(transport).poll()  # not yet
    assert fake_telegram.join_answers == []
    real = gate.clock
    gate.clock = lambda: real() + 5 * 60 + 1
    await verifier(transport).poll()
    await verifier(transport).poll()
    assert fake_telegram.join_answers == [(GROUP, USER, "declined")]


async def test_a_decision_whose_call_failed_is_retried_once_by_the_job(
    fake_telegram, fake_tencent, start_bot, config, note
):
    transport = await start_bot(config())
    fake_telegram.user_requests_to_join(GROUP)
    await fake_telegram.bot_replied(USER)
    fake_telegram.fail("approveChatJoinRequest", kind="400", description="Bad Request: CHAT_ADMIN_REQUIRED")
    assert (await verify_with_note(fake_telegram, fake_tencent, note)).startswith("✅")
    await until(lambda: fake_telegram.calls_of("approveChatJoinRequest"), "the first try")
    assert fake_telegram.join_answers == []
    gate = verifier(transport).gate
    await verifier(transport).poll()  # within STUCK_AFTER: left alone
    assert len(fake_telegram.calls_of("approveChatJoinRequest")) == 1
    real = gate.clock
    gate.clock = lambda: real() + 61
    await verifier(transport).poll()
    await verifier(transport).poll()
    assert fake_telegram.join_answers == [(GROUP, USER, "approved")]
    assert len(fake_telegram.calls_of("approveChatJoinRequest")) == 2  # the failed try and the one that worked


async def test_forget_deletes_the_join_requests_too(fake_telegram, start_bot, config, tmp_path):
    import sqlite3

    await start_bot(config())
    fake_telegram.user_requests_to_join(GROUP)
    await fake_telegram.bot_replied(USER)
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT user_id, state FROM realname_gate").fetchall() == [(USER, "pending")]
    fake_telegram.user_sends_text("/forget")
    await fake_telegram.bot_replied(USER)
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM realname_gate").fetchone() == (0,)


async def test_a_request_for_another_chat_is_left_alone(fake_telegram, start_bot, config):
    await start_bot(config())
    fake_telegram.user_requests_to_join(-100999)
    fake_telegram.user_sends_text("/help")
    reply = await fake_telegram.bot_replied(USER)
    assert "/verify" in reply.text  # the first message the user gets is /help's: nothing about the other chat
    assert fake_telegram.join_answers == [] and fake_telegram.join_requests == {(-100999, USER)}
