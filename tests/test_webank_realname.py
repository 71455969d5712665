"""/verify with the WeBank provider in-process (tests/harness.py) against the fake FaceID server: the identity
question (ID check before any call, deletion, retries), a second /verify, status, statistics, the callback
check, and the ID-number rules on their own."""

from __future__ import annotations

import datetime as dt
import sqlite3
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import plugins.realname as realname
from core.contract.errors import TemporarilyUnavailable
from core.runtime.config import ConfigError
from plugins.realname.identity import IdentityProblem, check_digit, parse_identity, valid_id_number
from plugins.realname.providers import Identity, WebankFaceId
from tests.fakes.webank import FACE_ID_PATH
from tests.harness import Harness

ADMIN = 42
NAME = "李雷"
ID_NUMBER = "370102199001015822"
ASK = "This verification checks your face against your ID card record."
BAD_ID = "That is not a valid 18-digit ID number"


def harness(fake_webank, **plugin) -> Harness:
    overrides = {**fake_webank.config(), "access": {"admins": [ADMIN]}}
    overrides["plugins"] = {"realname": {"provider": "webank", "poll_seconds": 3600, **plugin}}
    return Harness(overrides)


def verifier(bot: Harness) -> realname.Verifier:
    return bot.app.plugins.pm.get_plugin("realname").verifier


def state(bot: Harness, session: str) -> str:
    return bot.app.services.store.execute("SELECT state FROM realname_sessions WHERE id = ?", (session,))[0][0]


def session_of(replies) -> str:
    url = replies[-1].buttons[0][0].url
    back = parse_qs(urlsplit(url).query)["url"][0]
    return parse_qs(urlsplit(back).query)["start"][0].removeprefix("verify-")


async def start(bot: Harness, identity: str = f"{NAME} {ID_NUMBER}") -> list:
    assert Harness.text(await bot.send("/verify")).startswith(ASK)
    return await bot.send(identity)


# ---------------------------------------------------------------------------------------------- the question
@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (f"{NAME} 370102199001015826", BAD_ID),  # wrong check digit
        (f"{NAME} 370102199002305829", BAD_ID),  # 30 February
        (f"{NAME} 990102199001015822", BAD_ID),  # no such province
        (f"{NAME} 37010219900101582", "I could not find an 18-digit ID number"),  # 17 digits
        (f"{NAME} 3701021990010158221", "I could not find an 18-digit ID number"),  # 19 digits
        (f"{NAME} {ID_NUMBER} 11010519491231002X", BAD_ID),  # which one?
        (ID_NUMBER, "I could not find your name"),
        (f"{NAME}3 {ID_NUMBER}", "I could not find your name"),
    ],
)
async def test_an_unusable_answer_is_refused_before_any_call_deleted_and_asked_again(fake_webank, answer, problem):
    async with harness(fake_webank) as bot:
        await bot.send("/verify")
        replies = await bot.send(answer)
        assert bot.transport.deleted == [(1, bot._message_id)]
        rows = bot.app.services.store.execute("SELECT COUNT(*) FROM realname_sessions")[0][0]
    text = Harness.text(replies)
    assert text.startswith(problem) and text.endswith("Please send your name and ID number again (or /cancel).")
    assert answer not in text and ID_NUMBER[-6:] not in text
    assert fake_webank.api_calls() == 0 and rows == 0


async def test_three_unusable_answers_end_the_question_and_a_good_one_launches(fake_webank):
    async with harness(fake_webank) as bot:
        await bot.send("/verify")
        for _ in range(2):
            assert Harness.text(await bot.send("no number here")).endswith("(or /cancel).")
        last = Harness.text(await bot.send("still none"))
        assert last.endswith("Send /verify to start again when you are ready.")
        assert Harness.text(await bot.send(f"{NAME} {ID_NUMBER}")) != ""  # no longer awaited: a plain text
        assert fake_webank.api_calls() == 0
        replies = await start(bot, f"{ID_NUMBER}，{NAME}")  # either order, a Chinese comma
        assert replies[-1].text.startswith("Tap the button now")
    [order] = fake_webank.orders.values()
    assert (order.name, order.id_no) == (NAME, ID_NUMBER)
    assert len(bot.transport.deleted) == 4  # every answer was deleted, good or not


async def test_cancel_drops_the_question(fake_webank):
    async with harness(fake_webank) as bot:
        await bot.send("/verify")
        assert Harness.text(await bot.send("/cancel")) != ""
        hint = Harness.text(await bot.send(f"{NAME} {ID_NUMBER}"))
    assert fake_webank.api_calls() == 0 and not hint.startswith("Tap the button")


async def test_after_a_restart_the_open_question_still_reads_checks_and_deletes_the_answer(fake_webank, tmp_path):
    db = tmp_path / "aipbot.sqlite3"
    overrides = {"storage": {"path": str(db)}, **fake_webank.config()}
    overrides["plugins"] = {"realname": {"provider": "webank", "poll_seconds": 3600}}
    async with Harness(overrides) as bot:
        assert Harness.text(await bot.send("/verify")).startswith(ASK)
    async with Harness(overrides) as bot:  # a restart: a new App on the same database file
        refused = Harness.text(await bot.send(f"{NAME} 370102199001015826"))  # a wrong check digit
        assert bot.transport.deleted == [(1, bot._message_id)]
        assert refused.startswith(BAD_ID) and refused.endswith("(or /cancel).")
    assert fake_webank.api_calls() == 0
    async with Harness(overrides) as bot:  # another restart: the question, with its count of tries, goes on
        replies = await bot.send(f"{NAME} {ID_NUMBER}")
        assert bot.transport.deleted == [(1, bot._message_id)]
        rows = bot.app.services.store.execute("SELECT state FROM realname_sessions")
    assert replies[-1].text.startswith("Tap the button now") and rows == [("pending",)]
    [order] = fake_webank.orders.values()
    assert (order.name, order.id_no) == (NAME, ID_NUMBER)
    conn = sqlite3.connect(db)
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert NAME not in dump and ID_NUMBER not in dump and ID_NUMBER[-6:] not in dump


async def test_the_question_is_only_asked_in_a_private_chat(fake_webank):
    async with harness(fake_webank) as bot:
        text = Harness.text(await bot.send("/verify", chat_id=-100, chat_type="group"))
    assert text.startswith("For your privacy") and fake_webank.api_calls() == 0


async def test_without_webank_credentials_nothing_is_asked(fake_webank):
    overrides = {"providers": {"webank": {"app_id": "", "secret": ""}}}
    overrides["plugins"] = {"realname": {"provider": "webank"}}
    async with Harness(overrides) as bot:
        text = Harness.text(await bot.send("/verify"))
        status = bot.app.plugins.status(bot.app.services)["realname"]
    assert text.startswith("This feature is not set up correctly") and "NOT CONFIGURED" in status


def test_webank_needs_no_plan_id_but_baidu_still_does():
    Harness({"plugins": {"realname": {"provider": "webank"}}})
    with pytest.raises(ConfigError, match=r"plugins\.realname\.plan_id: is required"):
        Harness({"plugins": {"realname": {"provider": "baidu"}}})


# ---------------------------------------------------------------------------------------------- around the flow
async def test_a_second_verify_asks_again_and_replaces_the_pending_one_only_once_answered(fake_webank):
    async with harness(fake_webank) as bot:
        first = session_of(await start(bot))
        assert Harness.text(await bot.send("/verify")).startswith(ASK)  # a launch URL cannot be sent twice
        assert state(bot, first) == "pending"  # not replaced by the question alone
        second = session_of(await bot.send(f"{NAME} {ID_NUMBER}"))
        assert (state(bot, first), state(bot, second)) == ("replaced", "pending")
    assert len(fake_webank.orders) == 2 and fake_webank.ticket_fetches("NONCE") == 2


async def test_a_second_verify_whose_launch_webank_refuses_keeps_the_pending_one(fake_webank, monkeypatch):
    async with harness(fake_webank) as bot:
        first = session_of(await start(bot))
        provider = verifier(bot).provider()

        def refuse(*args, **kwargs):
            raise TemporarilyUnavailable("getAdvFaceId: refused (test)")

        monkeypatch.setattr(provider.client, "get_face_id", refuse)
        assert Harness.text(await bot.send("/verify")).startswith(ASK)
        text = Harness.text(await bot.send(f"{NAME} {ID_NUMBER}"))
        count = bot.app.services.store.execute("SELECT COUNT(*) FROM realname_sessions")[0][0]
        assert text == "The recognition service is temporarily unavailable. Please try again in a few minutes."
        assert state(bot, first) == "pending" and count == 1


async def test_the_webank_provider_checks_the_return_url_before_sending_the_identity(fake_webank):
    async with harness(fake_webank) as bot:
        provider = verifier(bot).provider()
        with pytest.raises(ValueError, match="absolute"):
            provider.start("example.com/back/x", Identity(NAME, ID_NUMBER))
    assert fake_webank.count(FACE_ID_PATH) == 0 and fake_webank.api_calls() == 0


async def test_on_the_console_verify_says_it_needs_telegram_before_asking_for_the_identity(fake_webank):
    async with harness(fake_webank) as bot:
        bot.transport.deep_link = lambda payload: f"/start {payload}"  # what the console transport builds
        text = Harness.text(await bot.send("/verify"))
        after = await bot.send(f"{NAME} {ID_NUMBER}")  # not taken as an answer: nothing was asked
    assert "only works in Telegram" in text and ASK not in text
    assert Harness.text(after).startswith("Send me a photo, or a command.")
    assert fake_webank.api_calls() == 0


async def test_status_check_button_and_verifystat(fake_webank):
    async with harness(fake_webank) as bot:
        replies = await start(bot)
        session = session_of(replies)
        assert Harness.text(await bot.send("/verify status")).startswith("There is no result for your verification")
        order = bot.app.services.store.execute("SELECT reference FROM realname_sessions")[0][0]
        requests.get(replies[-1].buttons[0][0].url, timeout=5)
        fake_webank.finish(order, passed=True, similarity=88, live_rate=97)
        checked = Harness.text(await bot.press(replies[-1].buttons[1][0]))
        stat = Harness.text(await bot.send(f"/verifystat {session}", user_id=ADMIN))
        again = Harness.text(await bot.send(f"/start verify-{session}"))
    assert checked == again == "✅ Real-name verification passed.\nFace similarity: 88 / 100\nLiveness: 97 / 100"
    assert "code: 0" in stat and "similarity: 88.0" in stat and "liveRate: 97.0" in stat
    assert "photo" not in stat and NAME not in stat


async def test_the_provider_checks_a_callback_and_rejects_a_forged_one(fake_webank):
    async with harness(fake_webank) as bot:
        replies = await start(bot)
        provider = verifier(bot).provider()
        order = bot.app.services.store.execute("SELECT reference FROM realname_sessions")[0][0]
        requests.get(replies[-1].buttons[0][0].url, timeout=5)
        callback = fake_webank.finish(order, passed=True)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert isinstance(provider, WebankFaceId) and provider.link(order, "https://x.example/") is None
    assert provider.check_return(order, params)
    assert not provider.check_return(order, {**params, "newSignature": "0" * 40})
    assert not provider.check_return(order, {**params, "code": "3003"})  # the code is signed too
    assert not provider.check_return(order, {k: v for k, v in params.items() if k != "newSignature"})
    assert not provider.check_return(order[:-1] + ("Y" if order.endswith("Z") else "Z"), params)


# ---------------------------------------------------------------------------------------------- ID numbers
@pytest.mark.parametrize("number", ["11010519491231002X", "11010519491231002x", "370102199001015822"])
def test_valid_id_numbers(number):
    assert valid_id_number(number)


@pytest.mark.parametrize(
    "number",
    ["11010519491231002Y", "110105194912310021", "370102199001015826", "37010218991231582", "0" * 18, "11" * 9],
)
def test_invalid_id_numbers(number):
    assert not valid_id_number(number)


def test_a_birth_date_in_the_future_is_invalid():
    first17 = "11010520300101001"
    number = first17 + check_digit(first17)
    assert not valid_id_number(number, today=dt.date(2029, 12, 31))
    assert valid_id_number(number, today=dt.date(2030, 1, 1))


@pytest.mark.parametrize(
    "text", [f"{NAME} {ID_NUMBER}", f"{ID_NUMBER}\n{NAME}", f" {NAME}、{ID_NUMBER} ", f"{NAME}:{ID_NUMBER.lower()}"]
)
def test_name_and_number_are_read_in_any_common_layout(text):
    identity = parse_identity(text)
    assert (identity.name, identity.id_number) == (NAME, ID_NUMBER)
    assert NAME not in repr(identity) and ID_NUMBER not in repr(identity)


def test_names_with_a_middle_dot_or_in_latin_letters_are_accepted():
    assert parse_identity(f"阿依古丽·买买提 {ID_NUMBER}").name == "阿依古丽·买买提"
    assert parse_identity(f"Li Lei {ID_NUMBER}").name == "Li Lei"
    with pytest.raises(IdentityProblem, match="no_name"):
        parse_identity(f"{'长' * 31} {ID_NUMBER}")
