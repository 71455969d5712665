"""/ocr and /facematch end to end: the real PTB stack on the fake Bot API, the Baidu engine on the fake Baidu.

No request leaves 127.0.0.1: the bot downloads the user's photo from the fake Bot API, prepares it, and
sends it to the fake Baidu server, whose answers come back to the user as Telegram messages.
"""

from pathlib import Path

import pytest

from core.runtime.config import validate
from core.runtime.roles import TelegramProcess as TelegramTransport
from tests.harness import merge

DATA = Path(__file__).resolve().parent.parent / "examples"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def bot(fake_telegram, fake_baidu, start_bot):
    """``await bot(plugins={...})`` starts the bot on the fake Bot API with Baidu configured on the fake."""

    async def start(**overrides) -> TelegramTransport:
        config = {
            **fake_telegram.config(album_wait=0.3),
            "storage": {"path": ":memory:"},
            **fake_baidu.config(),
        }
        return await start_bot(validate(merge(config, overrides)))

    return start


async def test_ocr_photo_goes_through_baidu_and_the_user_gets_baidus_text(bot, fake_telegram, fake_baidu):
    image = read("text/receipt.jpg")
    fake_baidu.set_text(image, ["Coffee shop receipt", "Total 68.50"])
    await bot(plugins={"ocr": {"engine": "baidu", "api": "accurate_basic"}})
    fake_telegram.user_sends_photo(image, caption="/ocr")
    reply = await fake_telegram.bot_replied(timeout=30)
    assert reply.text == "Coffee shop receipt\nTotal 68.50"
    assert fake_baidu.count("/rest/2.0/ocr/v1/accurate_basic") == 1
    assert fake_baidu.token_fetches == 1


async def test_ocr_auto_engine_uses_baidu_when_keys_are_configured(bot, fake_telegram, fake_baidu):
    image = read("text/en_line.png")
    fake_baidu.set_text(image, ["Hello TSINGTAO 2026"])
    await bot(plugins={"ocr": {}}, default_photo_command="ocr")
    fake_telegram.user_sends_document(image, file_name="line.png", mime_type="image/png")
    assert (await fake_telegram.bot_replied(timeout=30)).text == "Hello TSINGTAO 2026"
    assert fake_baidu.count("/rest/2.0/ocr/v1/general_basic") == 1


async def test_ocr_when_baidus_daily_quota_is_used_up_the_user_is_told_politely(bot, fake_telegram, fake_baidu):
    fake_baidu.daily_limit = 0
    await bot(plugins={"ocr": {"engine": "baidu"}})
    fake_telegram.user_sends_photo(read("text/en_line.png"), caption="/ocr")
    reply = await fake_telegram.bot_replied(timeout=30)
    assert "quota for today is used up" in reply.text


async def test_ocr_bad_image_is_refused_before_any_baidu_call(bot, fake_telegram, fake_baidu):
    await bot(plugins={"ocr": {"engine": "baidu"}})
    fake_telegram.user_sends_document(
        read("bad/not_an_image.jpg"), file_name="photo.jpg", mime_type="image/jpeg", caption="/ocr"
    )
    reply = await fake_telegram.bot_replied(timeout=30)
    assert "not an image" in reply.text
    assert fake_baidu.api_calls == 0


async def test_facematch_album_goes_through_baidu_match_with_its_threshold(bot, fake_telegram, fake_baidu):
    a, b = read("faces/obama_1.jpg"), read("faces/obama_2.jpg")
    fake_baidu.set_face(a, "obama")
    fake_baidu.set_face(b, "obama")
    await bot(plugins={"facematch": {"engine": "baidu"}})
    fake_telegram.user_sends_album([a, b], caption="/facematch")
    reply = await fake_telegram.bot_replied(timeout=60)
    assert reply.method == "sendPhoto"  # the two compared faces side by side, the verdict as caption
    assert reply.file is not None and reply.file[1][:2] == b"\xff\xd8"
    assert "92.5" in reply.text and "likely the same person" in reply.text
    assert fake_baidu.count("/rest/2.0/face/v3/match") == 1


async def test_facematch_one_photo_after_another_via_baidu_says_different_people(bot, fake_telegram, fake_baidu):
    a, b = read("faces/obama_1.jpg"), read("faces/biden_1.jpg")
    fake_baidu.set_face(a, "obama")
    fake_baidu.set_face(b, "biden")
    await bot(plugins={"facematch": {"engine": "baidu", "picture": False}})
    fake_telegram.user_sends_text("/facematch")
    await fake_telegram.bot_replied(timeout=30)
    fake_telegram.user_sends_photo(a)
    assert "first photo" in (await fake_telegram.bot_replied(timeout=30)).text
    fake_telegram.user_sends_photo(b)
    reply = await fake_telegram.bot_replied(timeout=60)
    assert "12.0" in reply.text and "likely different people" in reply.text
