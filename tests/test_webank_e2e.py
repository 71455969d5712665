"""/verify with the WeBank provider end to end: the real python-telegram-bot stack on the fake Bot API, the real
WeBank client on the fake FaceID server, and a real SQLite file.

The user's phone is played by the test: it opens the launch URL from the bot's button on the fake (which checks
its NONCE-ticket signature), finishes the check there (``FakeWebank.finish``) and follows the callback URL, which
is the bot's t.me deep link with WeBank's parameters appended; Telegram opens the bot with ``/start <payload>``
(the parameters stay behind in the browser).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from core.runtime.config import validate
from tests.fakes.webank import FACE_ID_PATH, QUERY_PATH
from tests.test_realname_e2e import assert_nothing_personal_stored, bot_starter, rows, until

USER = 1001
NAME = "李雷"
ID_NUMBER = "370102199001015822"


def config(fake_telegram, fake_webank, db: Path, **plugin) -> dict:
    return validate(
        {
            **fake_telegram.config(),
            "storage": {"path": str(db)},
            **fake_webank.config(),
            "plugins": {"realname": {"provider": "webank", "poll_seconds": 3600, **plugin}},
        }
    )


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "aipbot.sqlite3"


@pytest.fixture
def bot(fake_telegram, fake_webank, db, start_bot):
    """``await bot(**realname_config)`` starts a bot on the fake servers; ``await bot.stop()`` stops it."""
    return bot_starter(start_bot, lambda **plugin: config(fake_telegram, fake_webank, db, **plugin))


async def launch(fake_telegram, identity: str = f"{NAME} {ID_NUMBER}") -> tuple[dict, str, str]:
    """/verify, the question, the answer: ``(the answer message, the reply with the button, the launch URL)``."""
    fake_telegram.user_sends_text("/verify")
    question = await fake_telegram.bot_replied(USER)
    assert "18-digit ID number" in question.text and "I delete your message" in question.text
    answer = fake_telegram.user_sends_text(identity)
    reply = await fake_telegram.bot_replied(USER)
    return answer, reply, reply.buttons[0][0]["url"]


async def phone_opens(url: str) -> int:
    return (await asyncio.to_thread(requests.get, url, timeout=5)).status_code


async def test_the_whole_webank_flow_from_verify_to_the_outcome(fake_telegram, fake_webank, bot, db, caplog):
    caplog.set_level(logging.DEBUG)
    await bot()
    answer, reply, url = await launch(fake_telegram)

    # the message with the name and ID number is gone from the chat, and reached WeBank only
    assert (USER, answer["message_id"]) in fake_telegram.deleted
    [order] = fake_webank.orders.values()
    assert (order.name, order.id_no) == (NAME, ID_NUMBER)
    assert reply.text.startswith("Tap the button now") and "works once" in reply.text
    assert reply.buttons[1][0]["text"] == "Check result"
    [row] = rows(db)
    assert row["provider"] == "webank" and row["reference"] == order.order_no and row["state"] == "pending"
    back = parse_qs(urlsplit(url).query)["url"][0]
    assert back == f"https://t.me/{fake_telegram.bot_username}?start=verify-{row['id']}"

    # the phone: the launch URL's signature is checked by the fake, the check is done, the browser comes back
    assert await phone_opens(url) == 200
    callback = fake_webank.finish(order.order_no, passed=True, similarity=96.5, live_rate=99)
    payload = parse_qs(urlsplit(callback).query)["start"][0]
    fake_telegram.user_sends_text(f"/start {payload}")
    result = await fake_telegram.bot_replied(USER)

    assert result.text == "✅ Real-name verification passed.\nFace similarity: 96.5 / 100\nLiveness: 99 / 100"
    [row] = rows(db)
    assert (row["state"], row["score"], row["liveness"]) == ("passed", 96.5, 99)
    assert fake_webank.count(FACE_ID_PATH) == 1 and fake_webank.refused == []
    assert fake_webank.token_fetches == 1 and fake_webank.ticket_fetches("SIGN") == 1
    assert fake_webank.ticket_fetches("NONCE") == 1

    await bot.stop()
    assert_nothing_personal_stored(db, NAME, ID_NUMBER)
    # Our code at DEBUG says nothing personal. python-telegram-bot's own DEBUG records (telegram.*) print
    # every raw update, the identity message included: the transport must keep them above DEBUG (a core
    # matter, reported with this issue); at the default INFO level they are not emitted.
    ours = [r for r in caplog.records if not r.name.startswith("telegram")]
    leaked = [r for r in ours if NAME in r.getMessage() or ID_NUMBER in r.getMessage()]
    assert not leaked, [(r.name, r.getMessage()[:200]) for r in leaked]
    assert fake_webank.secret not in caplog.text
    assert not [r for r in ours if order.face_id in r.getMessage()]  # the launch URL is the user's alone


async def test_the_outcome_comes_from_the_query_not_from_the_callback(fake_telegram, fake_webank, bot, db):
    await bot()
    _, _, url = await launch(fake_telegram)
    [order] = fake_webank.orders.values()
    await phone_opens(url)
    # the page sends code 0 back, but WeBank's record says the faces did not match
    callback = fake_webank.finish(order.order_no, passed=False, code="0")
    fake_telegram.user_sends_text(f"/start {parse_qs(urlsplit(callback).query)['start'][0]}")
    result = await fake_telegram.bot_replied(USER)
    assert result.text == "❌ Real-name verification failed.\nFace similarity: 31 / 100\nLiveness: 12 / 100"
    assert rows(db)[0]["state"] == "failed"


async def test_the_polling_job_tells_the_user_once_with_the_token_renewed_no_more_than_its_cadence(
    fake_telegram, fake_webank, bot, db
):
    await bot(poll_seconds=0.02)
    _, _, url = await launch(fake_telegram)
    [order] = fake_webank.orders.values()
    before = fake_webank.count(QUERY_PATH)
    await until(lambda: fake_webank.count(QUERY_PATH) >= before + 3, "three polls with no result yet")
    await phone_opens(url)
    fake_webank.finish(order.order_no, passed=True)
    told = await fake_telegram.bot_replied(USER)
    assert told.text.startswith("✅ Real-name verification passed.")
    after = fake_webank.count(QUERY_PATH)
    await until(lambda: rows(db)[0]["state"] == "passed", "the session recorded as passed")
    await asyncio.sleep(0.1)  # the job runs on, with nothing left to ask about
    assert fake_webank.count(QUERY_PATH) <= after + 1
    assert fake_webank.token_fetches == 1  # dozens of signed calls within one 20-minute cadence: one token
    assert fake_webank.ticket_fetches("SIGN") == 1


async def test_a_message_the_bot_may_not_delete_is_flagged_to_the_user(fake_telegram, fake_webank, bot):
    fake_telegram.can_delete = False
    await bot()
    fake_telegram.user_sends_text("/verify")
    await fake_telegram.bot_replied(USER)
    fake_telegram.user_sends_text(f"{NAME} {ID_NUMBER}")
    warning = await fake_telegram.bot_replied(USER)
    assert warning.text.startswith("I could not delete your message with your name and ID number")
    launched = await fake_telegram.bot_replied(USER)
    assert launched.text.startswith("Tap the button now") and fake_telegram.deleted == []


async def test_a_restart_while_the_question_is_open_still_reads_checks_and_deletes_the_answer(
    fake_telegram, fake_webank, bot, db
):
    await bot()
    fake_telegram.user_sends_text("/verify")
    assert "18-digit ID number" in (await fake_telegram.bot_replied(USER)).text
    await bot.stop()  # the bot restarts while the user types their answer

    await bot()  # a new App, a new transport, the same database file: the question is still open
    answer = fake_telegram.user_sends_text(f"{NAME} {ID_NUMBER}")
    reply = await fake_telegram.bot_replied(USER)
    assert (USER, answer["message_id"]) in fake_telegram.deleted
    assert reply.text.startswith("Tap the button now")
    [order] = fake_webank.orders.values()
    assert (order.name, order.id_no) == (NAME, ID_NUMBER)
    [row] = rows(db)
    assert row["state"] == "pending" and row["reference"] == order.order_no
    await bot.stop()
    assert_nothing_personal_stored(db, NAME, ID_NUMBER)
