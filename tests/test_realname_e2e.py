"""/verify end to end: the real python-telegram-bot stack on the fake Bot API, the real Baidu client on the
fake Baidu server, and a real SQLite file (so a restart is a new App and transport on the same database).

The user's phone is played by the test: it reads the H5 URL from the bot's button, finishes the
verification on the fake (``finish_verification``) and comes back by the success/failure URL, i.e. by
sending ``/start <payload>`` as Telegram does when a t.me deep link is opened.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from core.runtime.config import validate
from core.runtime.roles import TelegramProcess as TelegramTransport
from tests.harness import merge

USER = 1001
OTHER = 2002
ADMIN = 42
NAME = "柴静"
ID_NUMBER = "370102199001015826"
MASKED_NAME = "柴*"
MASKED_ID = "370***********5826"
GENERATE = "/rpc/2.0/brain/solution/faceprint/verifyToken/generate"
DETAIL = "/rpc/2.0/brain/solution/faceprint/result/detail"


def config(fake_telegram, fake_baidu, db: Path, **plugin) -> dict:
    base = {
        **fake_telegram.config(),
        "access": {"admins": [ADMIN]},
        "storage": {"path": str(db)},
        "http": fake_baidu.config()["http"],
        "providers": {"baidu": fake_baidu.provider_config()},
        "plugins": {"realname": {"plan_id": "fake-plan", "poll_seconds": 3600}},
    }
    return validate(merge(base, {"plugins": {"realname": plugin}}))


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "aipbot.sqlite3"


def bot_starter(start_bot, make_config):
    """``await bot(**realname_config)`` starts a bot with ``make_config(**realname_config)``; ``await bot.stop()``
    stops it."""

    async def start(**plugin) -> TelegramTransport:
        return await start_bot(make_config(**plugin))

    start.stop = start_bot.stop  # type: ignore[attr-defined]
    return start


@pytest.fixture
def bot(fake_telegram, fake_baidu, db, start_bot):
    return bot_starter(start_bot, lambda **plugin: config(fake_telegram, fake_baidu, db, **plugin))


class Link:
    """What the bot's "/verify" answer offers: the H5 page and the way back."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.url = reply.buttons[0][0]["url"]
        query = parse_qs(urlsplit(self.url).query)
        self.token = query["token"][0]
        self.success_url = query["successUrl"][0]
        self.failed_url = query["failedUrl"][0]
        self.payload = parse_qs(urlsplit(self.success_url).query)["start"][0]
        self.session = self.payload.removeprefix("verify-")
        self.check = reply.callback_data[0]


async def start_verification(fake_telegram, user_id: int = USER) -> Link:
    fake_telegram.user_sends_text("/verify", user_id=user_id)
    return Link(await fake_telegram.bot_replied(user_id))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for an event (not a timing assertion: the timeout only bounds a hung test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def rows(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM realname_sessions")]


def assert_nothing_personal_stored(db: Path, *secrets: str) -> None:
    """No name or ID number anywhere in the database: not in any table, not in the file or its WAL."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))
        dump += "\n".join(conn.iterdump())
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for secret in secrets:
        assert secret not in dump
        assert secret.encode() not in raw
        assert secret[-6:] not in dump
    assert "base64" not in dump.lower() and "front_" not in dump


async def test_happy_path_link_pass_return_masked_result_and_nothing_personal_stored(
    fake_telegram, fake_baidu, bot, db, caplog
):
    caplog.set_level(logging.DEBUG)
    await bot()
    link = await start_verification(fake_telegram)
    assert "valid for 120 minutes" in link.reply.text
    assert link.reply.buttons[1][0]["text"] == "Check result"
    bot_link = f"https://t.me/{fake_telegram.bot_username}?start={link.payload}"
    assert link.success_url == link.failed_url == bot_link
    assert link.url.startswith(fake_baidu.endpoint + "/face/print/?token=")
    assert len(link.session) == 32
    [row] = rows(db)
    assert row["state"] == "pending" and row["user_id"] == USER and row["reference"] == link.token

    # on the phone: the H5 page, the ID card, the face; Baidu now has the result
    fake_baidu.finish_verification(link.token, passed=True, name=NAME, id_number=ID_NUMBER)
    fake_telegram.user_sends_text(f"/start {link.payload}")  # the success URL opens the bot
    reply = await fake_telegram.bot_replied(USER)

    assert reply.text.startswith("✅ Real-name verification passed.")
    assert f"Name: {MASKED_NAME}" in reply.text and f"ID number: {MASKED_ID}" in reply.text
    assert "Face similarity: 91.5 / 100 (needed: 80)" in reply.text and "Liveness: 0.98" in reply.text
    assert NAME not in reply.text and ID_NUMBER not in reply.text
    [row] = rows(db)
    assert (row["state"], row["score"], row["liveness"]) == ("passed", 91.5, 0.98)
    assert row["finished_at"] and row["notified_at"]
    await bot.stop()
    assert_nothing_personal_stored(db, NAME, ID_NUMBER)
    bad = [r for r in caplog.records if NAME in r.getMessage() or ID_NUMBER in r.getMessage()]
    assert not bad, [(r.name, r.getMessage()[:300]) for r in bad]


async def test_failed_verification_is_reported_as_failed_with_the_checks_that_failed(fake_telegram, fake_baidu, bot):
    await bot()
    link = await start_verification(fake_telegram)
    fake_baidu.finish_verification(link.token, passed=False, name=NAME, id_number=ID_NUMBER)
    fake_telegram.user_sends_text(f"/start {link.payload}")  # the failure URL is the same way back
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text.startswith("❌ Real-name verification failed.")
    assert "Not passed: face similarity, liveness, spoof detection." in reply.text
    assert "Face similarity: 31 / 100" in reply.text and MASKED_NAME in reply.text


async def test_the_outcome_comes_from_result_detail_and_the_rule_not_from_the_way_back(
    fake_telegram, fake_baidu, bot, db
):
    await bot(min_score=85)
    link = await start_verification(fake_telegram)
    # Baidu's page calls it a success (the user is sent to successUrl), but the similarity is below the rule
    fake_baidu.finish_verification(link.token, passed=True, score=82.0)
    fake_telegram.user_sends_text(f"/start {link.payload}")
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text.startswith("❌ Real-name verification failed.")
    assert "Face similarity: 82 / 100 (needed: 85)" in reply.text and "Not passed: face similarity." in reply.text
    assert rows(db)[0]["state"] == "failed"


async def test_coming_back_before_the_result_offers_to_check_and_the_button_reports_it(fake_telegram, fake_baidu, bot):
    await bot()
    link = await start_verification(fake_telegram)
    fake_telegram.user_sends_text(f"/start {link.payload}")
    waiting = await fake_telegram.bot_replied(USER)
    assert waiting.text.startswith("There is no result for your verification yet.")
    fake_baidu.finish_verification(link.token, passed=True, name=NAME, id_number=ID_NUMBER)
    fake_telegram.user_presses_button(waiting, link.check)
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text.startswith("✅") and MASKED_ID in reply.text


async def test_an_expired_token_reveals_nothing_and_the_session_is_marked_expired(fake_telegram, fake_baidu, bot, db):
    transport = await bot()
    link = await start_verification(fake_telegram)
    store = transport.app.services.store  # two hours pass: the token's window is over
    store.execute("UPDATE realname_sessions SET expires_at = created_at - 1")
    fake_telegram.user_sends_text(f"/start {link.payload}")
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text == "This verification link is not valid (any more). Send /verify to start a new verification."
    assert rows(db)[0]["state"] == "expired"
    fake_telegram.user_sends_text("/verify")  # a new verification, a new token
    again = Link(await fake_telegram.bot_replied(USER))
    assert again.token != link.token and fake_baidu.count(GENERATE) == 2


async def test_a_foreign_or_forged_payload_reveals_nothing(fake_telegram, fake_baidu, bot):
    await bot()
    link = await start_verification(fake_telegram)
    fake_baidu.finish_verification(link.token, passed=True, name=NAME, id_number=ID_NUMBER)
    detail_calls = fake_baidu.count(DETAIL)
    invalid = "This verification link is not valid (any more). Send /verify to start a new verification."
    forged = "verify-" + "A" * 32
    for payload in (link.payload, forged, "verify-short", "verify-" + link.session[:-1] + "!"):
        fake_telegram.user_sends_text(f"/start {payload}", user_id=OTHER)
        reply = await fake_telegram.bot_replied(OTHER)
        assert reply.text == invalid, payload
    assert fake_baidu.count(DETAIL) == detail_calls, "nobody's result was even asked for"
    # the owner, in a group, gets nothing either; in private the result is still theirs
    fake_telegram.user_sends_text(f"/start {link.payload}", chat_type="group")
    assert (await fake_telegram.bot_replied(fake_telegram.DEFAULT_GROUP_ID)).text == invalid
    fake_telegram.user_sends_text(f"/start {link.payload}")
    assert MASKED_NAME in (await fake_telegram.bot_replied(USER)).text


async def test_the_polling_job_tells_the_user_once_when_the_result_appears(fake_telegram, fake_baidu, bot, db):
    await bot(poll_seconds=0.02)
    link = await start_verification(fake_telegram)
    other = await start_verification(fake_telegram, OTHER)
    fake_baidu.finish_verification(link.token, passed=True, name=NAME, id_number=ID_NUMBER)
    told = await fake_telegram.bot_replied(USER)
    assert told.text.startswith("✅ Real-name verification passed.") and MASKED_ID in told.text
    # later runs of the job go on (OTHER's session is still asked about) but USER is not told again
    after = fake_baidu.count(DETAIL)
    await until(lambda: fake_baidu.count(DETAIL) >= after + 3, "three more polls")
    assert [c for c in fake_telegram.calls_of("sendMessage") if c.chat_id == USER][-1] is told
    assert {r["user_id"]: r["state"] for r in rows(db)} == {USER: "passed", OTHER: "pending"}
    assert other.session != link.session


async def test_the_job_expires_an_abandoned_session_and_says_so_once(fake_telegram, fake_baidu, bot, db):
    transport = await bot(poll_seconds=0.02)
    await start_verification(fake_telegram)
    transport.app.services.store.execute("UPDATE realname_sessions SET expires_at = created_at - 1")
    notice = await fake_telegram.bot_replied(USER)
    assert notice.text.startswith("Your verification link expired before a result came in.")
    assert rows(db)[0]["state"] == "expired"


async def test_a_restart_between_verify_and_the_return_loses_nothing(fake_telegram, fake_baidu, bot, db):
    await bot()
    link = await start_verification(fake_telegram)
    await bot.stop()  # the bot restarts while the user is on the H5 page

    fake_baidu.finish_verification(link.token, passed=True, name=NAME, id_number=ID_NUMBER)
    await bot()  # a new App, a new transport, the same database file
    fake_telegram.user_sends_text(f"/start {link.payload}")
    reply = await fake_telegram.bot_replied(USER)
    assert reply.text.startswith("✅ Real-name verification passed.")
    assert MASKED_NAME in reply.text and MASKED_ID in reply.text
    fake_telegram.user_sends_text(f"/start {link.payload}", user_id=OTHER)
    assert "not valid" in (await fake_telegram.bot_replied(OTHER)).text
    await bot.stop()
    assert_nothing_personal_stored(db, NAME, ID_NUMBER)


async def test_a_pending_session_from_before_a_restart_is_completed_by_the_job_after_it(
    fake_telegram, fake_baidu, bot, db
):
    await bot()
    link = await start_verification(fake_telegram)
    await bot.stop()
    await bot(poll_seconds=0.02)
    fake_baidu.finish_verification(link.token, passed=False, name=NAME, id_number=ID_NUMBER)
    told = await fake_telegram.bot_replied(USER)
    assert told.text.startswith("❌ Real-name verification failed.") and MASKED_NAME in told.text
    assert rows(db)[0]["state"] == "failed"


async def test_in_a_group_the_bot_answers_with_a_link_to_a_private_chat(fake_telegram, fake_baidu, bot, db):
    await bot()
    fake_telegram.user_sends_text("/verify@aipbot_test_bot", chat_type="group")
    reply = await fake_telegram.bot_replied(fake_telegram.DEFAULT_GROUP_ID)
    assert reply.text.startswith("For your privacy, verification happens in a private chat with me.")
    assert reply.buttons[0][0]["url"] == f"https://t.me/{fake_telegram.bot_username}?start=verify-go"
    assert rows(db) == [] and fake_baidu.count(GENERATE) == 0
    fake_telegram.user_sends_text("/start verify-go")  # the button opens the private chat
    link = Link(await fake_telegram.bot_replied(USER))
    assert rows(db)[0]["chat_id"] == USER and link.token in fake_baidu.verifications
