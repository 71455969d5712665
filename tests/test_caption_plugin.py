"""The two-step plugin of tests/caption_plugin.py (the documented API only), in process and across a restart."""

from pathlib import Path

from core.runtime.config import validate
from tests import caption_plugin
from tests.harness import Harness

DATA = Path(__file__).resolve().parents[1] / "examples"
PHOTO = (DATA / "faces" / "obama_1.jpg").read_bytes()


def bot() -> Harness:
    return Harness({"plugins": {"caption": {}}}, extra_plugins={"caption": caption_plugin})


async def test_caption_asks_for_the_words_then_sends_the_photo_back_with_them():
    async with bot() as b:
        assert Harness.text(await b.send("/caption", photos=[PHOTO])) == "What should the caption say?"
        [reply] = await b.send("Yes we can")
    assert reply.text == "Yes we can" and reply.photo is not None and reply.photo[:2] == b"\xff\xd8"


async def test_caption_refuses_a_truncated_photo_at_once_and_waits_for_nothing():
    async with bot() as b:
        refused = Harness.text(await b.send("/caption", photos=[(DATA / "bad" / "truncated.jpg").read_bytes()]))
        later = Harness.text(await b.send("some words"))
    assert "image" in refused.lower() and "caption" not in refused.lower()
    assert later.startswith("Send me a photo, or a command.")


async def test_caption_survives_a_restart_between_the_photo_and_the_words(fake_telegram, start_bot, tmp_path):
    config = {**fake_telegram.config(), "storage": {"path": str(tmp_path / "db")}, "plugins": {"caption": {}}}
    await start_bot(validate(config), {"caption": caption_plugin})
    fake_telegram.user_sends_photo(PHOTO, caption="/caption")
    assert (await fake_telegram.bot_replied()).text == "What should the caption say?"
    await start_bot.stop()
    await start_bot(validate(config), {"caption": caption_plugin})
    fake_telegram.user_sends_text("Yes we can")
    reply = await fake_telegram.bot_replied(methods=["sendPhoto"])
    assert reply.text == "Yes we can"
