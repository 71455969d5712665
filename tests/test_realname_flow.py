"""/verify in-process (tests/harness.py) against the fake Baidu server: the decisions around the happy path.

Second /verify (reuse, replace), /verify status, /forget, /verifystat, retention, provider trouble, the pass
rule, masking, and the provider interface on its own.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

import plugins.realname as realname
from core.contract.errors import TemporarilyUnavailable
from core.infra.store import Store
from core.runtime.app import App
from core.runtime.config import ConfigError, validate
from plugins.realname.providers import BaiduFaceprint, PassRule, Result
from plugins.realname.sessions import Session, SessionStore, looks_like_id, new_id
from tests.harness import Harness, merge

ADMIN = 42
NAME = "柴静"
ID_NUMBER = "370102199001015826"
GENERATE = "/rpc/2.0/brain/solution/faceprint/verifyToken/generate"
DETAIL = "/rpc/2.0/brain/solution/faceprint/result/detail"
INVALID = "This verification link is not valid (any more). Send /verify to start a new verification."


def harness(fake_baidu, **plugin) -> Harness:
    overrides = merge(fake_baidu.config(), {"access": {"admins": [ADMIN]}})
    overrides["plugins"] = {"realname": {"plan_id": "fake-plan", "poll_seconds": 3600, **plugin}}
    return Harness(overrides)


def link_of(replies) -> tuple[str, str]:
    """(verify_token, session id) from the bot's "/verify" answer."""
    query = parse_qs(urlsplit(replies[-1].buttons[0][0].url).query)
    session = parse_qs(urlsplit(query["successUrl"][0]).query)["start"][0].removeprefix("verify-")
    return query["token"][0], session


def verifier(bot: Harness) -> realname.Verifier:
    return bot.app.plugins.pm.get_plugin("realname").verifier


def state(bot: Harness, session: str) -> str:
    return bot.app.services.store.execute("SELECT state FROM realname_sessions WHERE id = ?", (session,))[0][0]


# ---------------------------------------------------------------------------------------------- a second /verify
async def test_a_second_verify_while_pending_resends_the_same_link(fake_baidu):
    async with harness(fake_baidu) as bot:
        first = await bot.send("/verify")
        again = await bot.send("/verify")
    assert again[0].text.startswith("You already have a verification in progress (valid for 1")
    assert again[0].buttons == first[0].buttons
    assert fake_baidu.count(GENERATE) == 1


async def test_a_double_tap_on_verify_starts_one_verification(fake_baidu):
    fake_baidu.latency = 0.05  # both taps arrive while the first is still asking Baidu
    async with harness(fake_baidu) as bot:
        await asyncio.gather(bot.send("/verify"), bot.send("/verify"))
        sessions = bot.app.services.store.execute("SELECT state FROM realname_sessions")
    assert sessions == [("pending",)] and fake_baidu.count(GENERATE) == 1


async def test_a_double_tap_reaching_two_processes_of_one_bot_starts_one_verification(fake_baidu, tmp_path):
    fake_baidu.latency = 0.05  # the second tap arrives at the other process while the first is asking Baidu
    overrides = merge(fake_baidu.config(), {"storage": {"path": str(tmp_path / "aipbot.sqlite3")}})
    overrides["plugins"] = {"realname": {"plan_id": "fake-plan", "poll_seconds": 3600}}
    async with Harness(overrides) as one, Harness(overrides) as two:  # two Apps sharing the database file
        first, second = await asyncio.gather(one.send("/verify"), two.send("/verify"))
        sessions = one.app.services.store.execute("SELECT state FROM realname_sessions")
    assert sessions == [("pending",)] and fake_baidu.count(GENERATE) == 1
    assert first[0].buttons == second[0].buttons  # the later one re-sent the link of the first


async def test_two_processes_sharing_a_postgresql_database_start_one_verification_and_tell_its_end_once(
    fake_baidu, tmp_path, postgres_server
):
    fake_baidu.latency = 0.05
    cluster = {"database_url": postgres_server.database()}  # the sessions, the outbox, the quotas: PostgreSQL
    overrides = merge(fake_baidu.config(), {"storage": {"path": str(tmp_path / "state.sqlite3")}, "cluster": cluster})
    overrides["plugins"] = {"realname": {"plan_id": "fake-plan", "poll_seconds": 3600}}
    async with Harness(overrides) as one, Harness(overrides) as two:
        assert one.app.services.store.dialect == "postgresql"
        first, second = await asyncio.gather(one.send("/verify"), two.send("/verify"))
        assert one.app.services.store.execute("SELECT state FROM realname_sessions") == [("pending",)]
        assert first[0].buttons == second[0].buttons and fake_baidu.count(GENERATE) == 1
        token, session = link_of(first)
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        await asyncio.gather(verifier(one).poll(), verifier(two).poll())  # both pollers see the result
        told = [r.text for bot in (one, two) for _, r in bot.transport.sent if r.text.startswith("✅")]
        assert len(told) == 1 and state(one, session) == "passed"


async def test_verify_new_replaces_the_pending_one(fake_baidu):
    async with harness(fake_baidu) as bot:
        old_token, old = link_of(await bot.send("/verify"))
        new_token, new = link_of(await bot.send("/verify new"))
        assert (state(bot, old), state(bot, new)) == ("replaced", "pending")
        assert new_token != old_token and fake_baidu.count(GENERATE) == 2
        # the user still finishes the old page and comes back by its link: the result is theirs
        fake_baidu.finish_verification(old_token, name=NAME, id_number=ID_NUMBER)
        text = Harness.text(await bot.send(f"/start verify-{old}"))
        assert text.startswith("✅") and "柴*" in text
        assert state(bot, old) == "passed"


@pytest.mark.parametrize("fault", [{"http_status": 503, "times": 3}, {"code": 17}], ids=["baidu-503", "quota"])
async def test_verify_new_that_fails_to_launch_keeps_the_pending_verification_alive(fake_baidu, fault):
    async with harness(fake_baidu) as bot:
        token, old = link_of(await bot.send("/verify"))
        fake_baidu.inject(**fault, path=GENERATE)
        failed = Harness.text(await bot.send("/verify new"))
        assert not failed.startswith("Tap the button")
        assert state(bot, old) == "pending"  # still theirs: polled, and reported when it ends
        assert bot.app.services.store.execute("SELECT COUNT(*) FROM realname_sessions")[0][0] == 1
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        await verifier(bot).poll()
        assert bot.transport.sent[-1][1].text.startswith("✅ Real-name verification passed.")
        assert state(bot, old) == "passed"


async def test_a_pending_link_close_to_its_end_is_replaced_not_resent(fake_baidu):
    async with harness(fake_baidu, reuse_minutes=15) as bot:
        _, old = link_of(await bot.send("/verify"))
        bot.app.services.store.execute("UPDATE realname_sessions SET expires_at = ? + 600", (verifier(bot).clock(),))
        replies = await bot.send("/verify")
        _, new = link_of(replies)
    assert replies[0].text.startswith("Tap the button to open the verification page")
    assert new != old and fake_baidu.count(GENERATE) == 2


async def test_a_second_verify_after_the_first_finished_reports_it(fake_baidu):
    async with harness(fake_baidu) as bot:
        token, _ = link_of(await bot.send("/verify"))
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        text = Harness.text(await bot.send("/verify"))
        assert text.startswith("✅ Real-name verification passed.")
        assert Harness.text(await bot.send("/verify")).startswith("Tap the button")  # then a new one
    assert fake_baidu.count(GENERATE) == 2


# ---------------------------------------------------------------------------------------------- status, forget
async def test_someone_elses_check_button_reveals_nothing(fake_baidu):
    async with harness(fake_baidu) as bot:
        replies = await bot.send("/verify")
        token, _ = link_of(replies)
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        check = replies[0].buttons[1][0]
        assert Harness.text(await bot.press(check, user_id=2)) == INVALID
        assert Harness.text(await bot.press(check)).startswith("✅")


async def test_verify_status_follows_the_session(fake_baidu):
    async with harness(fake_baidu) as bot:
        assert Harness.text(await bot.send("/verify status")) == "You have no verification. Send /verify to start one."
        token, _ = link_of(await bot.send("/verify"))
        assert Harness.text(await bot.send("/verify status")).startswith("There is no result for your verification")
        fake_baidu.finish_verification(token, passed=False)
        assert Harness.text(await bot.send("/verify status")).startswith("❌ Real-name verification failed.")
        assert Harness.text(await bot.send("/verify bogus")).startswith("/verify — start")


async def test_forget_deletes_the_users_sessions_and_their_links_stop_working(fake_baidu):
    async with harness(fake_baidu) as bot:
        token, session = link_of(await bot.send("/verify"))
        link_of(await bot.send("/verify", user_id=7))
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        assert Harness.text(await bot.send("/forget")).startswith("Deleted 1 verification record(s).")
        assert Harness.text(await bot.send(f"/start verify-{session}")) == INVALID
        owners = bot.app.services.store.execute("SELECT user_id FROM realname_sessions")
    assert owners == [(7,)]


async def test_forget_also_deletes_the_users_quota_counts(fake_baidu):
    async with harness(fake_baidu) as bot:
        bot.app.services.store.use_quota(1, "verify", "2026-12-01", 5)
        bot.app.services.store.use_quota(7, "verify", "2026-12-01", 5)
        await bot.send("/forget")
        rows = bot.app.services.store.execute("SELECT user_id FROM quota_use")
    assert rows == [(7,)]


async def test_chinese_users_get_the_outcome_in_chinese(fake_baidu):
    async with harness(fake_baidu) as bot:
        token, session = link_of(await bot.send("/verify", language="zh"))
        fake_baidu.finish_verification(token, name=NAME, id_number=ID_NUMBER)
        text = Harness.text(await bot.send(f"/start verify-{session}", language="zh"))
    assert text.startswith("✅ 实名认证通过。") and "姓名：柴*" in text and "身份证号：370***********5826" in text


# ---------------------------------------------------------------------------------------------- admins
async def test_verifystat_shows_the_providers_counts_to_admins_only(fake_baidu):
    async with harness(fake_baidu) as bot:
        token, session = link_of(await bot.send("/verify"))
        await bot.send(f"/start verify-{session}")  # one result/detail request
        refused = Harness.text(await bot.send(f"/verifystat {session}"))
        stat = Harness.text(await bot.send(f"/verifystat {session}", user_id=ADMIN))
        listing = Harness.text(await bot.send("/verifystat", user_id=ADMIN))
        unknown = Harness.text(await bot.send("/verifystat " + "x" * 32, user_id=ADMIN))
        in_group = Harness.text(await bot.send("/verifystat", user_id=ADMIN, chat_id=-5, chat_type="group"))
    assert "admins only" in refused
    assert stat.startswith(f"Session {session}: pending, user 1, started ")
    assert "stat › result/detail › 0: 1" in stat and "status: pending" in stat
    assert token not in stat
    assert f"{session} · pending · user 1" in listing
    assert unknown.startswith("There is no session with this id")
    assert in_group == "Please use /verifystat in a private chat with me."


# ---------------------------------------------------------------------------------------------- the job
async def test_retention_deletes_old_finished_sessions_but_not_pending_ones(fake_baidu):
    async with harness(fake_baidu, retention_days=30) as bot:
        token, done = link_of(await bot.send("/verify"))
        fake_baidu.finish_verification(token)
        await bot.send(f"/start verify-{done}")
        _, waiting = link_of(await bot.send("/verify", user_id=7))
        store = bot.app.services.store
        store.execute("UPDATE realname_sessions SET created_at = created_at - 40 * 86400")  # both started long ago
        store.execute("UPDATE realname_sessions SET finished_at = finished_at - 31 * 86400 WHERE id = ?", (done,))
        await verifier(bot).poll()
        left = [row[0] for row in store.execute("SELECT id FROM realname_sessions")]
    assert left == [waiting]


async def test_the_job_skips_a_session_the_provider_cannot_answer_for_and_goes_on(fake_baidu):
    async with harness(fake_baidu) as bot:
        t1, s1 = link_of(await bot.send("/verify", user_id=1))
        t2, s2 = link_of(await bot.send("/verify", user_id=2))
        fake_baidu.finish_verification(t1)
        fake_baidu.finish_verification(t2)
        # the first session's requests fail (Baidu 283400, past every retry); the second is answered
        fake_baidu.inject(283400, times=3, path=DETAIL)
        await verifier(bot).poll()
        states = (state(bot, s1), state(bot, s2))
        told = [chat for chat, _ in bot.transport.sent[2:]]
    assert states == ("pending", "passed") and told == [2]


async def test_a_user_check_while_the_provider_is_down_gets_a_polite_answer(fake_baidu):
    async with harness(fake_baidu) as bot:
        _, session = link_of(await bot.send("/verify"))
        fake_baidu.inject(283400, times=3, path=DETAIL)
        text = Harness.text(await bot.send(f"/start verify-{session}"))
        assert text == "The recognition service is temporarily unavailable. Please try again in a few minutes."
        assert state(bot, session) == "pending"


async def test_without_baidu_keys_verify_says_it_is_not_set_up_and_the_job_does_no_harm(fake_baidu):
    overrides = {"providers": {"baidu": {"api_key": "", "secret_key": ""}}}
    async with Harness(merge(overrides, {"plugins": {"realname": {"plan_id": "p"}}})) as bot:
        text = Harness.text(await bot.send("/verify"))
        await verifier(bot).poll()
        status = bot.app.plugins.status(bot.app.services)["realname"]
    assert text.startswith("This feature is not set up correctly")
    assert "NOT CONFIGURED" in status


async def test_an_unknown_plan_is_the_admins_problem_and_no_session_is_left(fake_baidu):
    async with harness(fake_baidu, plan_id="no-such-plan") as bot:
        text = Harness.text(await bot.send("/verify"))
        count = bot.app.services.store.execute("SELECT COUNT(*) FROM realname_sessions")[0][0]
    assert text.startswith("This feature is not set up correctly") and count == 0


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("return_url", "example.com/back/{session}"),
        ("return_url", "http://example.com/back/{session}"),
        ("return_url", "/start verify-{session}"),
        ("h5_base_url", "brain.baidu.com/face/print/"),
        ("h5_base_url", "ftp://brain.baidu.com/face/print/"),
    ],
)
def test_a_return_url_or_h5_page_that_is_not_absolute_https_stops_start_up_and_is_named(key, url):
    config = validate({"storage": {"path": ":memory:"}, "plugins": {"realname": {"plan_id": "p", key: url}}})
    with pytest.raises(ConfigError, match=rf"plugins\.realname\.{key}: must be an absolute https URL"):
        App(config)


@pytest.mark.parametrize(
    "url", ["https://example.com/back?s={session}", "http://127.0.0.1:8080/back/{session}", "http://localhost/b"]
)
def test_https_urls_and_local_http_ones_are_accepted_at_start_up(url):
    plugin = {"plan_id": "p", "return_url": url, "h5_base_url": url.replace("{session}", "")}
    App(validate({"storage": {"path": ":memory:"}, "plugins": {"realname": plugin}}))


@pytest.mark.parametrize(("language", "answer"), [("en", "only works in Telegram"), ("zh", "只能在 Telegram 中进行")])
async def test_on_the_console_verify_says_it_needs_telegram_and_asks_baidu_nothing(fake_baidu, language, answer):
    async with harness(fake_baidu) as bot:
        bot.transport.deep_link = lambda payload: f"/start {payload}"  # what the console transport builds
        text = Harness.text(await bot.send("/verify", language=language))
        count = bot.app.services.store.execute("SELECT COUNT(*) FROM realname_sessions")[0][0]
    assert answer in text and count == 0
    assert fake_baidu.api_calls == 0 and fake_baidu.token_fetches == 0


def test_the_baidu_provider_checks_the_return_url_before_spending_a_verify_token(fake_baidu):
    from core.providers.baidu import BaiduClient

    provider = BaiduFaceprint(BaiduClient.from_config(fake_baidu.config()), "fake-plan", PassRule())
    with pytest.raises(ValueError, match="absolute"):
        provider.start("example.com/back/x")
    assert fake_baidu.count(GENERATE) == 0


def test_plan_id_is_required_and_named():
    with pytest.raises(ConfigError, match=r"plugins\.realname\.plan_id: is required"):
        App(validate({"storage": {"path": ":memory:"}, "plugins": {"realname": {}}}))


# ---------------------------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    ("name", "masked"), [("柴静", "柴*"), ("张三丰", "张**"), ("欧阳娜娜", "欧***"), ("王", "王*"), ("", "")]
)
def test_names_keep_only_their_first_character(name, masked):
    assert realname.mask_name(name) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("370102199001015826", "370***********5826"),
        ("11010519491231002X", "110***********002X"),
        ("110105491231002", "110********1002"),
        ("E1234567", "******67"),
        ("123", "***"),
    ],
)
def test_id_numbers_keep_the_first_3_and_last_4(number, masked):
    assert realname.mask_id_number(number) == masked


def test_the_pass_rule_needs_score_and_spoofing_and_a_reported_liveness():
    rule = PassRule(min_score=80, min_liveness=0.3, max_spoofing=0.00048)
    assert rule.judge(80, 0.3, 0.00048) == (True, ())
    assert rule.judge(79.9, 0.98, 0.0) == (False, ("score",))
    assert rule.judge(95, 0.1, 0.0) == (False, ("liveness",))
    assert rule.judge(95, 0, 0.0) == (True, ())  # 0: Baidu's reserved field, "not reported"
    assert rule.judge(95, 0.9, 0.5) == (False, ("spoofing",))
    assert rule.judge(None, None, None) == (False, ("score", "spoofing"))


def test_the_baidu_provider_has_no_result_while_pending_then_a_judged_one(fake_baidu):
    from core.providers.baidu import BaiduClient

    client = BaiduClient.from_config(fake_baidu.config())
    provider = BaiduFaceprint(client, "fake-plan", PassRule())
    launch = provider.start("https://t.me/bot?start=verify-x")
    assert launch.expires_in == 7200 and provider.link(launch.reference, "https://t.me/b") is not None
    assert provider.result(launch.reference) is None
    fake_baidu.finish_verification(launch.reference, via_ocr=True, name=NAME, id_number=ID_NUMBER)
    result = provider.result(launch.reference)
    assert isinstance(result, Result) and result.passed
    assert (result.name, result.id_number) == ("柴*", "370***********5826")  # masked by Baidu (the fake)
    assert NAME not in repr(result) and ID_NUMBER not in repr(result)
    fake_baidu.inject(283400, times=3, path=DETAIL)
    with pytest.raises(TemporarilyUnavailable):
        provider.result(launch.reference)


def test_an_overridden_h5_base_url_is_used_with_the_same_query():
    from core.providers.baidu import BaiduClient

    client = BaiduClient("h5-test-api-key", "h5-test-secret-key")  # builds URLs only: no request is made
    url = client.h5_url(
        "vt1", "https://t.me/b?start=verify-x", "https://x", base="https://h5-faceverify-plus.baidu.com/face/print/"
    )
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://h5-faceverify-plus.baidu.com/face/print/?token=vt1&")
    assert query == {"token": ["vt1"], "successUrl": ["https://t.me/b?start=verify-x"], "failedUrl": ["https://x"]}
    with pytest.raises(ValueError):
        client.h5_url("vt1", "t.me/relative", "https://x", base="https://h5.example/")


async def test_the_return_url_can_be_configured(fake_baidu):
    async with harness(fake_baidu, return_url="https://example.com/back?s={session}") as bot:
        replies = await bot.send("/verify")
    query = parse_qs(urlsplit(replies[0].buttons[0][0].url).query)
    assert query["successUrl"][0].startswith("https://example.com/back?s=") and len(query["successUrl"][0]) == 59


def test_session_ids_are_unguessable_payloads_and_the_store_keeps_no_more_than_its_columns(store_target):
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(looks_like_id(i) for i in ids)
    assert not looks_like_id("go") and not looks_like_id("a" * 31 + "!")

    store = SessionStore(Store(store_target))
    session = Session(new_id(), 1, 1, "en", "baidu", "vt1", "pending", None, None, None, 10.0, 20.0)
    store.create(session)
    assert store.get(session.id) == session and session.id[:6] in repr(session) and "vt1" not in repr(session)
    assert store.finish(session.id, "passed", 90.0, 0.9, 0.0, 11.0)
    assert not store.finish(session.id, "failed", 1.0, 0.0, 1.0, 12.0), "only one transition wins"
    assert store.get(session.id).state == "passed"
    assert store.purge(before=12.0) == 1 and store.get(session.id) is None


async def test_a_result_whose_notice_a_restart_cut_off_is_told_once_by_the_next_run_of_the_job(fake_baidu):
    async with harness(fake_baidu) as bot:
        token, session_id = link_of(await bot.send("/verify"))
        fake_baidu.finish_verification(token)
        v = verifier(bot)
        [session] = await bot.app.services.run_db(v.sessions.pending)
        state_now, _, won = await v.settle(session)  # decided; the process dies before the notice
        assert won and state_now == "passed"
        before = len(bot.transport.sent)
        await v.poll()  # too soon to call it missed: it may still be on its way
        assert len(bot.transport.sent) == before
        start = v.clock()
        v.clock = lambda: start + 61
        await v.poll()
        await v.poll()
        notices = [reply.text for _, reply in bot.transport.sent[before:]]
    assert len(notices) == 1 and notices[0].startswith("✅ Real-name verification passed.")
    assert session_id in notices[0]
