"""The return page in a real headless browser: Debian's Chromium driven by Playwright (its PyPI wheel ships the
driver; no browser is downloaded: ``executable_path`` is Debian's ``/usr/bin/chromium``, which ``.ci/run``
installs). A missing Chromium fails these tests, it does not skip them.

The phone is a 390×844 viewport. The bot runs on the fake Bot API and the fake Baidu with its web server and a
public URL, the poll set to an hour: a notification seen here came from the page visit. Screenshots of the en
and zh pages go to ``tmp_path`` (and to ``$AIPBOT_SCREENSHOTS`` when that is set, to look at them).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_realname_e2e import ID_NUMBER, MASKED_ID, MASKED_NAME, NAME, USER, rows
from tests.test_realname_pages import DONE_EN, NOT_YET_EN, NOT_YET_ZH, PageLink, baidu_starter

CHROMIUM = os.environ.get("AIPBOT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DONE_ZH = "已完成。请回到 Telegram：机器人已收到您的认证结果。"


async def open_phone(tmp_path: Path, locale: str) -> AsyncIterator[Any]:
    """A page of a fresh headless Chromium (its own profile) with a phone-sized viewport and ``locale``."""
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)"
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / f"chromium-profile-{locale}"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale=locale,
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aipbot.sqlite3"


@pytest.fixture
def baidu_bot(fake_telegram, fake_baidu, db, start_bot):
    """``await baidu_bot()`` → the public base URL of a Baidu bot with its web server."""
    return baidu_starter(fake_telegram, fake_baidu, db, start_bot)


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Any]:
    """An English-speaking phone's browser."""
    async for page in open_phone(tmp_path, "en-US"):
        yield page


@pytest.fixture
async def phone_zh(tmp_path: Path) -> AsyncIterator[Any]:
    """A Chinese-speaking phone's browser (``Accept-Language: zh-CN``)."""
    async for page in open_phone(tmp_path, "zh-CN"):
        yield page


def screenshot(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    target = os.environ.get("AIPBOT_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def finished_link(fake_telegram, fake_baidu, **who: Any) -> PageLink:
    fake_telegram.user_sends_text("/verify", **who)
    link = PageLink(await fake_telegram.bot_replied(USER))
    fake_baidu.finish_verification(link.token, name=NAME, id_number=ID_NUMBER)
    return link


async def check_page(phone: Any, text: str, lang: str) -> None:
    """The page's text, its button to the bot and nothing personal, in the DOM and in the rendered text."""
    source, rendered = await phone.content(), await phone.inner_text("body")
    assert text in rendered
    assert await phone.get_attribute("html", "lang") == lang
    button = phone.locator("a.button")
    assert await button.get_attribute("href") == "https://t.me/aipbot_test_bot"
    assert "noreferrer" in (await button.get_attribute("rel") or "")
    assert await button.is_visible()
    for secret in (NAME, ID_NUMBER, MASKED_NAME, MASKED_ID, "91.5", "0.98", "score", "similarity"):
        assert secret not in source and secret not in rendered, secret
    box = await phone.locator("main p").bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]  # no horizontal scrolling or zooming
    size = await phone.evaluate("getComputedStyle(document.querySelector('main p')).fontSize")
    assert float(size.removesuffix("px")) >= 16


async def test_the_english_page_renders_links_to_the_bot_and_the_user_is_told_without_the_poll(
    fake_telegram, fake_baidu, baidu_bot, phone, tmp_path
):
    await baidu_bot()
    link = await finished_link(fake_telegram, fake_baidu)
    response = await phone.goto(link.success_url)
    assert response is not None and response.status == 200
    await check_page(phone, DONE_EN, "en")
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("✅ Real-name verification passed.")
    screenshot(await phone.screenshot(full_page=True), tmp_path / "return-page-en.png")


async def test_the_chinese_page_renders_in_the_sessions_language(fake_telegram, fake_baidu, baidu_bot, phone, tmp_path):
    await baidu_bot()
    link = await finished_link(fake_telegram, fake_baidu, language_code="zh-hans")
    await phone.goto(link.failed_url)
    await check_page(phone, DONE_ZH, "zh-CN")
    assert "返回 Telegram" in await phone.inner_text("a.button")
    told = await fake_telegram.bot_replied(USER, timeout=5)
    assert told.text.startswith("✅")
    screenshot(await phone.screenshot(full_page=True), tmp_path / "return-page-zh.png")


async def test_a_forged_or_expired_reference_shows_the_neutral_page_and_notifies_nobody(
    fake_telegram, fake_baidu, baidu_bot, db, phone
):
    base = await baidu_bot()
    link = await finished_link(fake_telegram, fake_baidu)
    ref = link.success_url.rsplit("/", 1)[1]
    forged = ref[:-1] + ("A" if ref[-1] != "A" else "B")
    await phone.goto(f"{base}/verify/return/{forged}")
    await check_page(phone, NOT_YET_EN, "en")
    neutral = await phone.content()
    with sqlite3.connect(db) as conn:  # the window ended before the result was asked for
        conn.execute("UPDATE realname_sessions SET state = 'expired'")
    response = await phone.goto(link.success_url)
    assert response is not None and response.status == 200
    assert await phone.content() == neutral
    with pytest.raises(AssertionError):
        await fake_telegram.bot_replied(USER, timeout=0.5)
    assert rows(db)[0]["state"] == "expired"


async def test_the_neutral_page_follows_the_browsers_language(baidu_bot, phone_zh):
    base = await baidu_bot()
    await phone_zh.goto(f"{base}/verify/return/{'Z' * 32}")
    await check_page(phone_zh, NOT_YET_ZH, "zh-CN")
