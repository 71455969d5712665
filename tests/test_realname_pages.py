"""The return page ``/verify/return/<ref>`` over plain HTTP (httpx): the real bot on the fake Bot API, the real
Baidu / WeBank clients on their fakes, the bot's web server on a free port with ``server.public_url`` set.

The polling job is set to an hour, so every notification seen here came from the page visit itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests

from core.runtime.config import validate
from tests.harness import merge
from tests.servers import free_port
from tests.test_realname_e2e import DETAIL, ID_NUMBER, MASKED_ID, MASKED_NAME, NAME, USER, Link, rows


class PageLink:
    """The H5 URL of the bot's "/verify" answer, whose way back is the bot's return page."""

    def __init__(self, reply) -> None:
        self.url = reply.buttons[0][0]["url"]
        query = parse_qs(urlsplit(self.url).query)
        self.token = query["token"][0]
        self.success_url = query["successUrl"][0]
        self.failed_url = query["failedUrl"][0]


DONE_EN = "Done. Go back to Telegram: the bot has your result."
NOT_YET_EN = "We could not check the result here yet. The bot will tell you in Telegram as soon as it has it."
NOT_YET_ZH = "暂时无法在此确认结果。机器人一收到结果就会在 Telegram 中通知您。"


def telegram(fake_telegram) -> dict:
    return {
        "token": fake_telegram.TOKEN,
        "base_url": fake_telegram.base_url,
        "base_file_url": fake_telegram.base_file_url,
        "poll_timeout": 1,
    }


def web_config(fake_telegram, db: Path, providers: dict, **plugin) -> tuple[dict, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = {
        "telegram": telegram(fake_telegram),
        "storage": {"path": str(db)},
        "server": {"listen": "127.0.0.1", "port": port, "public_url": base},
        "plugins": {"realname": {"poll_seconds": 3600, **plugin}},
    }
    return validate(merge(config, providers)), base


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "aipbot.sqlite3"


def baidu_starter(fake_telegram, fake_baidu, db: Path, start_bot):
    """``await start(**realname)`` → the public base URL of a Baidu bot with its web server."""

    async def start(**plugin) -> str:
        provider = {"http": fake_baidu.config()["http"], "providers": {"baidu": fake_baidu.provider_config()}}
        config, base = web_config(fake_telegram, db, provider, plan_id="fake-plan", **plugin)
        await start_bot(config)
        return base

    return start


@pytest.fixture
def baidu_bot(fake_telegram, fake_baidu, db, start_bot):
    """See :func:`baidu_starter`."""
    return baidu_starter(fake_telegram, fake_baidu, db, start_bot)


@pytest.fixture
def webank_bot(fake_telegram, fake_webank, db, start_bot):
    async def start(**plugin) -> str:
        config, base = web_config(fake_telegram, db, fake_webank.config(), provider="webank", **plugin)
        await start_bot(config)
        return base

    return start


async def get(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kwargs)


async def baidu_link(fake_telegram) -> PageLink:
    fake_telegram.user_sends_text("/verify")
    return PageLink(await fake_telegram.bot_replied(USER))


def assert_neutral(answer: httpx.Response, text: str = NOT_YET_EN) -> None:
    assert answer.status_code == 200 and text in answer.text and "Done." not in answer.text


async def test_baidu_comes_back_to_the_bots_page_and_the_user_is_told_without_waiting_for_the_poll(
    fake_telegram, fake_baidu, baidu_bot, db
):
    base = await baidu_bot()
    link = await baidu_link(fake_telegram)
    assert link.success_url == link.failed_url and link.success_url.startswith(base + "/verify/return/")
    ref = link.success_url.rsplit("/", 1)[1]
    [row] = rows(db)
    assert row["return_ref"] == ref and ref != row["id"] and row["id"] not in link.url
    fake_baidu.finish_verification(link.token, name=NAME, id_number=ID_NUMBER)
    page = await get(link.success_url)
    assert page.status_code == 200 and DONE_EN in page.text
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("✅ Real-name verification passed.") and MASKED_NAME in told.text
    assert MASKED_ID in told.text
    for secret in (NAME, ID_NUMBER, MASKED_NAME, MASKED_ID, "91.5", "0.98", link.token, row["id"]):
        assert secret not in page.text
    again = await get(link.failed_url)  # a second visit: the same page, and nobody is told twice
    assert DONE_EN in again.text
    await asyncio.sleep(0.3)
    assert [c for c in fake_telegram.calls_of("sendMessage") if "Real-name verification" in c.text] == [told]


async def test_a_page_visit_before_the_end_says_not_yet_and_a_failed_step_is_reported_at_once(
    fake_telegram, fake_baidu, baidu_bot, db, monkeypatch
):
    from plugins.realname import pages

    monkeypatch.setattr(pages, "RECHECK_SECONDS", 1.0)
    await baidu_bot()
    link = await baidu_link(fake_telegram)
    assert_neutral(await get(link.success_url))
    assert rows(db)[0]["state"] == "pending"
    asked = fake_baidu.count(DETAIL)
    assert_neutral(await get(link.success_url))  # a reload right away does not ask Baidu again
    assert fake_baidu.count(DETAIL) == asked
    await asyncio.sleep(1.1)  # the next window
    fake_baidu.finish_verification(link.token, passed=False, code=223120)  # liveness failed: no scores
    assert DONE_EN in (await get(link.failed_url)).text
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("❌ Real-name verification failed.") and "Not passed: liveness." in told.text
    assert rows(db)[0]["state"] == "failed"


async def test_40_reloads_of_a_pending_page_by_several_visitors_cost_at_most_3_baidu_checks(
    fake_telegram, fake_baidu, baidu_bot, db
):
    await baidu_bot()
    link = await baidu_link(fake_telegram)
    fake_baidu.reset_counters()
    fake_baidu.inject(http_status=502, times=1000, path=DETAIL)  # Baidu unwell: one check is 3 tries
    for _ in range(20):  # one visitor reloading
        assert_neutral(await get(link.success_url))
    pages = await asyncio.gather(*(get(link.failed_url) for _ in range(20)))  # twenty at once
    for page in pages:
        assert_neutral(page)
    assert 1 <= fake_baidu.count(DETAIL) <= 3, fake_baidu.count(DETAIL)
    assert rows(db)[0]["state"] == "pending"


@pytest.mark.parametrize(
    "ref",
    ["A" * 32, "short", "..%5C..%5Cetc%5Cpasswd", "%3Cscript%3E", "a" * 5000, "%00%ff%fe", "x" * 31 + "!", "ÿ" * 32],
)
async def test_unknown_malformed_and_very_long_references_get_the_same_neutral_page(
    fake_telegram, fake_baidu, baidu_bot, ref
):
    base = await baidu_bot()
    link = await baidu_link(fake_telegram)
    fake_baidu.finish_verification(link.token)
    answer = await get(f"{base}/verify/return/{ref}")
    assert_neutral(answer)
    reference = await get(f"{base}/verify/return/{'B' * 32}")
    assert (answer.status_code, answer.text) == (reference.status_code, reference.text)
    with pytest.raises(AssertionError):
        await fake_telegram.bot_replied(USER, timeout=0.3)  # nobody was told anything


async def test_the_neutral_page_follows_accept_language_and_a_known_session_its_own_language(fake_telegram, baidu_bot):
    base = await baidu_bot()
    assert_neutral(
        await get(f"{base}/verify/return/{'C' * 32}", headers={"Accept-Language": "zh-CN,zh;q=0.9"}), NOT_YET_ZH
    )
    assert_neutral(await get(f"{base}/verify/return/{'C' * 32}", headers={"Accept-Language": "en;q=1, zh;q=0.5"}))
    assert_neutral(
        await get(f"{base}/verify/return/{'C' * 32}", headers={"Accept-Language": "fr, zh;q=0.1"}), NOT_YET_ZH
    )
    assert_neutral(await get(f"{base}/verify/return/{'C' * 32}", headers={"Accept-Language": ";;;q=x,,"}))
    fake_telegram.user_sends_text("/verify", language_code="zh-hans")
    link = PageLink(await fake_telegram.bot_replied(USER))
    assert_neutral(await get(link.success_url, headers={"Accept-Language": "en"}), NOT_YET_ZH)


async def test_security_headers_no_script_and_the_button_goes_to_the_bot_without_a_referrer(fake_telegram, baidu_bot):
    base = await baidu_bot()
    answer = await get(f"{base}/verify/return/{'D' * 32}")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-eval" not in csp
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-type"].startswith("text/html")
    assert "<script" not in answer.text.lower() and 'name="viewport"' in answer.text
    bot = f"https://t.me/{fake_telegram.bot_username}"
    assert f'href="{bot}" rel="noreferrer noopener"' in answer.text


async def test_wrong_methods_get_a_short_clear_answer(fake_telegram, baidu_bot):
    base = await baidu_bot()
    async with httpx.AsyncClient(timeout=10) as client:
        post = await client.post(f"{base}/verify/return/{'E' * 32}", content=b"code=0")
        head = await client.head(f"{base}/verify/return/{'E' * 32}")
        bare = await client.get(f"{base}/verify/return/")
    assert (post.status_code, post.text) == (405, "method not allowed\n") and "GET" in post.headers["allow"]
    assert head.status_code == 200 and head.text == ""
    assert bare.status_code == 404


async def test_without_a_public_url_the_deep_link_stays_the_way_back(fake_telegram, fake_baidu, start_bot, db):
    config = {
        "telegram": telegram(fake_telegram),
        "storage": {"path": str(db)},
        "server": {"listen": "127.0.0.1", "port": 0},
        "http": fake_baidu.config()["http"],
        "providers": {"baidu": fake_baidu.provider_config()},
        "plugins": {"realname": {"plan_id": "fake-plan", "poll_seconds": 3600}},
    }
    await start_bot(validate(config))
    fake_telegram.user_sends_text("/verify")
    link = Link(await fake_telegram.bot_replied(USER))
    assert link.success_url == f"https://t.me/{fake_telegram.bot_username}?start={link.payload}"


# -- WeBank ------------------------------------------------------------------------------------------------------


async def webank_launch(fake_telegram) -> str:
    fake_telegram.user_sends_text("/verify")
    await fake_telegram.bot_replied(USER)
    fake_telegram.user_sends_text("李雷 370102199001015822")
    reply = await fake_telegram.bot_replied(USER)
    url = reply.buttons[0][0]["url"]
    assert (await asyncio.to_thread(requests.get, url, timeout=5)).status_code == 200  # the phone opens it
    return url


async def test_webank_calls_back_to_the_bots_page_signed_and_the_user_is_told_at_once(
    fake_telegram, fake_webank, webank_bot, db
):
    base = await webank_bot()
    url = await webank_launch(fake_telegram)
    assert parse_qs(urlsplit(url).query)["url"][0].startswith(base + "/verify/return/")
    [order] = fake_webank.orders.values()
    callback = fake_webank.finish(order.order_no, passed=True)
    page = await get(callback)
    assert DONE_EN in page.text and "95" not in page.text and order.order_no not in page.text
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("✅ Real-name verification passed.")
    assert rows(db)[0]["state"] == "passed"


async def test_a_forged_webank_callback_changes_nothing_and_reveals_nothing(fake_telegram, fake_webank, webank_bot, db):
    await webank_bot()
    await webank_launch(fake_telegram)
    [order] = fake_webank.orders.values()
    callback = fake_webank.finish(order.order_no, passed=False, record=False)  # the genuine one would fail it
    parts = urlsplit(callback)
    params = parse_qs(parts.query)
    forged = {k: v[0] for k, v in params.items()} | {"newSignature": "0" * 40}
    queries = fake_webank.count("/api/v2/base/queryfacerecord")
    for query in (forged, {k: v for k, v in forged.items() if k != "newSignature"}, {}):
        page = await get(f"{parts.scheme}://{parts.netloc}{parts.path}", params=query)
        assert_neutral(page)
    assert fake_webank.count("/api/v2/base/queryfacerecord") == queries  # nothing was even asked
    assert rows(db)[0]["state"] == "pending"
    with pytest.raises(AssertionError):
        await fake_telegram.bot_replied(USER, timeout=0.3)
    assert DONE_EN in (await get(callback)).text  # the genuine callback: W4, failed without a record
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("❌ Real-name verification failed.")
    assert rows(db)[0]["state"] == "failed"


#: The table as the first release created it (raw SQLite DDL, before ``return_ref``).
OLD_SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS realname_sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    lang TEXT NOT NULL,
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    state TEXT NOT NULL,
    score REAL,
    liveness REAL,
    spoofing REAL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    checked_at REAL,
    finished_at REAL,
    notified_at REAL
);
CREATE INDEX IF NOT EXISTS realname_sessions_user ON realname_sessions(user_id, created_at);
CREATE INDEX IF NOT EXISTS realname_sessions_state ON realname_sessions(state, expires_at);
"""


def test_a_database_from_before_the_return_page_gets_the_column_and_keeps_its_rows(tmp_path):
    from core.infra.store import Store
    from plugins.realname.sessions import SessionStore

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SESSIONS_SCHEMA)
        conn.execute(
            "INSERT INTO realname_sessions (id, user_id, chat_id, lang, provider, reference, state, created_at,"
            " expires_at) VALUES ('s1', 1, 1, 'en', 'baidu', 'vt1', 'pending', 0, 7200)"
        )
    store = Store(path)
    try:
        sessions = SessionStore(store)
        old = sessions.get("s1")
        assert old is not None and old.return_ref is None and old.state == "pending"
        SessionStore(store)  # a second start changes nothing
        assert sessions.by_return_ref("s1") is None
    finally:
        store.close()


async def test_metrics_count_verification_sessions_by_state(fake_telegram, fake_baidu, baidu_bot):
    from tests.test_web import sample

    base = await baidu_bot()
    link = await baidu_link(fake_telegram)
    metrics = (await get(base + "/metrics")).text
    assert sample(metrics, "aipbot_verification_sessions", state="pending") == 1
    fake_baidu.finish_verification(link.token, name=NAME, id_number=ID_NUMBER)
    await get(link.success_url)
    metrics = (await get(base + "/metrics")).text
    assert sample(metrics, "aipbot_verification_sessions", state="passed") == 1
    assert sample(metrics, "aipbot_verification_sessions", state="pending") == 0


async def test_after_forget_no_table_holds_the_users_chat_id(fake_telegram, fake_baidu, baidu_bot, db):
    await baidu_bot()
    link = await baidu_link(fake_telegram)
    fake_baidu.finish_verification(link.token, name=NAME, id_number=ID_NUMBER)
    assert DONE_EN in (await get(link.success_url)).text
    await fake_telegram.bot_replied(USER, timeout=5)  # the result, through the outbox
    await asyncio.sleep(0.3)
    assert str(USER) in dump(db)  # the session, the outbox message, the journal's open rows named the chat
    fake_telegram.user_sends_text("/forget")
    assert (await fake_telegram.bot_replied(USER, timeout=5)).text.startswith("Deleted 1 verification record(s).")
    for _ in range(100):  # the /forget update itself is marked handled right after its answer
        if str(USER) not in dump(db):
            break
        await asyncio.sleep(0.05)
    assert str(USER) not in dump(db), [line for line in dump(db).splitlines() if str(USER) in line]


def dump(db: Path) -> str:
    """Every row of every table of the bot's database, one line each (``table: values``)."""
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        lines = [f"{t}: {row}" for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')]
    conn.close()
    return "\n".join(lines)
