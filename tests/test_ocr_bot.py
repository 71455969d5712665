"""/ocr end to end through the in-process bot (real config, plugin manager, router), with the local engine
on the shared test images and with Baidu against the fake Baidu server."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import plugins.ocr as ocr_plugin
from plugins.ocr.engines import LocalEngine, local_engine
from tests.harness import Harness

DATA = Path(__file__).resolve().parent.parent / "examples"
TEXT = DATA / "text"
BAD = DATA / "bad"
EXPECTED: dict[str, list[str]] = json.loads((TEXT / "expected.json").read_text(encoding="utf-8"))
LOCAL = {"plugins": {"ocr": {"enabled": True, "engine": "local"}}}

pytestmark = pytest.mark.slow


def squeeze(text: str) -> str:
    return "".join(text.split())


def image(name: str, folder: Path = TEXT) -> bytes:
    return (folder / name).read_bytes()


def message(bot: Harness, key: str, **params: object) -> str:
    return bot.app.catalogue.text("en", key, **params)


def _reds(picture: Image.Image) -> int:
    pixels = np.asarray(picture.convert("RGB")).astype(int)
    return int(((pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 110)).sum())


def assert_reads(text: str, expected_lines: list[str]) -> None:
    """Every expected word is there and the lines come in order (whitespace ignored)."""
    flat = squeeze(text)
    for word in " ".join(expected_lines).split():
        assert word in flat, f"{word!r} missing from {text!r}"
    position = 0
    for line in expected_lines:
        found = flat.find(squeeze(line), position)
        assert found >= 0, f"line {line!r} missing or out of order in {text!r}"
        position = found + len(squeeze(line))


@pytest.fixture(scope="session")
def engine() -> LocalEngine:
    """The process-wide local engine (the one the plugin uses with default settings), loaded once."""
    shared = local_engine(0, 2000)
    shared.warm()
    return shared


# ---------------------------------------------------------------------------------------------- local engine
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_local_engine_reads_each_text_image_in_reading_order(engine, name):
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/ocr", photos=[image(name)])
    assert len(replies) == 1
    text = replies[0].text
    assert_reads(text, EXPECTED[name])
    assert "ocr." not in text  # no catalogue key leaked
    assert len(text.splitlines()) == len(EXPECTED[name])  # one reply line per line on the image


async def test_local_engine_text_matches_the_image_exactly_apart_from_spacing(engine):
    async with Harness(LOCAL) as bot:
        for name, lines in EXPECTED.items():
            (reply,) = await bot.send("/ocr", photos=[image(name)])
            got = [squeeze(line) for line in reply.text.splitlines()]
            assert got == [squeeze(line) for line in lines], name


async def test_command_first_then_photo_keeps_the_language_argument(engine):
    async with Harness(LOCAL) as bot:
        (prompt,) = await bot.send("/ocr en")
        assert prompt.text == message(bot, "ocr.ocr.prompt")
        (reply,) = await bot.send(photos=[image("en_line.png")])
    assert_reads(reply.text, EXPECTED["en_line.png"])


async def test_default_photo_command_reads_a_photo_sent_alone(engine):
    async with Harness({**LOCAL, "default_photo_command": "ocr"}) as bot:
        (reply,) = await bot.send(photos=[image("receipt.jpg")])
    assert_reads(reply.text, EXPECTED["receipt.jpg"])


async def test_album_gets_each_images_text_labelled_and_bad_images_their_own_message(engine):
    photos = [image("en_line.png"), image("not_an_image.jpg", BAD), image("blank.png", BAD), image("zh_notice.png")]
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=photos)
        sections = reply.text.split("\n\n")
        assert [s.splitlines()[0] for s in sections] == [f"Image {n}:" for n in range(1, 5)]
        assert_reads(sections[0], EXPECTED["en_line.png"])
        assert sections[1].splitlines()[1] == message(bot, "error.image_not_image")
        assert sections[2].splitlines()[1] == message(bot, "ocr.no_text")
        assert_reads(sections[3], EXPECTED["zh_notice.png"])


BAD_INPUTS = {
    "not_an_image.jpg": ("error.image_not_image", {}),
    "truncated.jpg": ("error.image_truncated", {}),
    "tiny.png": ("error.image_too_small", {"width": 8, "height": 8}),
    "very_wide.png": ("error.image_too_narrow", {"width": 9000, "height": 60}),
    "blank.png": ("ocr.no_text", {}),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_inputs_get_a_clear_message(engine, name):
    key, params = BAD_INPUTS[name]
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[image(name, BAD)])
        assert reply.text == message(bot, key, **params)
    assert "{" not in reply.text


async def test_animated_image_reads_its_first_frame_and_says_so(engine):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("animation.gif", BAD)])
        assert reply.text == message(bot, "ocr.animated") + "\n" + message(bot, "ocr.no_text")


async def test_a_photo_of_words_without_a_face_is_read(engine):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("no_face.png", BAD)])
    assert "face" in reply.text and "words" in reply.text


async def test_boxes_return_the_photo_with_lines_outlined(engine):
    async with Harness(LOCAL) as bot:
        text_reply, picture = await bot.send("/ocr boxes", photos=[image("receipt.jpg")])
        assert_reads(text_reply.text, EXPECTED["receipt.jpg"])
        assert picture.text == message(bot, "ocr.boxes_caption")
    assert picture.photo is not None
    drawn = Image.open(io.BytesIO(picture.photo))
    original = Image.open(TEXT / "receipt.jpg")
    assert drawn.format == "JPEG" and drawn.size == original.size
    # Outlines are drawn in red: the original receipt has no strongly red pixels, the annotated one has.
    pixels = np.asarray(drawn.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 110)
    assert not _reds(original) and red.sum() > 200


async def test_boxes_are_refused_politely_when_annotation_is_off(engine):
    config = {"plugins": {"ocr": {"enabled": True, "engine": "local", "annotate": False}}}
    async with Harness(config) as bot:
        replies = await bot.send("/ocr boxes", photos=[image("en_line.png")])
        assert len(replies) == 1 and replies[0].photo is None
        assert replies[0].text.startswith(message(bot, "ocr.boxes_off"))
    assert_reads(replies[0].text, EXPECTED["en_line.png"])


async def test_a_language_the_local_model_cannot_read_is_answered_plainly_without_keys(engine):
    """Korean (Hangul) is not in PP-OCRv6's characters: without Baidu keys the answer says so, and reads nothing."""
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr ko", photos=[image("zh_notice.png")])
        reads = "English, Chinese, Japanese, French, German, Spanish, Portuguese, Italian"
        assert reply.text == message(bot, "ocr.local_unsupported", language="Korean", reads=reads)


async def test_unknown_argument_explains_the_usage(engine):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr klingon", photos=[image("en_line.png")])
    assert "klingon" in reply.text and "/ocr en boxes" in reply.text


async def test_chinese_user_gets_chinese_messages(engine):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("blank.png", BAD)], language="zh")
        assert reply.text == bot.app.catalogue.text("zh", "ocr.no_text")


async def test_status_names_the_local_engine(engine):
    async with Harness({**LOCAL, "access": {"admins": [1]}}) as bot:
        (reply,) = await bot.send("/plugins")
    assert "ocr (/ocr): engine: local (PP-OCRv6 small)" in reply.text


async def test_startup_returns_before_the_model_is_warm(monkeypatch):
    """aipbot_startup hands warming to a thread: it returns while warming is still blocked."""
    release = threading.Event()
    warmed = threading.Event()

    class BlockedEngine(LocalEngine):
        def warm(self) -> None:
            release.wait(30)
            warmed.set()

    blocked = BlockedEngine()
    monkeypatch.setattr(ocr_plugin, "local_engine", lambda *args, **kwargs: blocked)
    async with Harness(LOCAL) as bot:
        assert not warmed.is_set()  # start-up did not wait for the model
        release.set()
        await asyncio.to_thread(bot.app.plugins.pm.get_plugin("ocr")._warm.join, 30)
    assert warmed.is_set()


def test_one_engine_used_from_several_threads_gives_the_same_answers(engine):
    """Concurrent calls are serialised by the engine's lock and each gets its own image's text."""
    names = sorted(EXPECTED)
    pictures = {name: Image.open(TEXT / name).convert("RGB") for name in names}
    alone = {name: [f.text for f in engine.read(pictures[name])] for name in names}
    together: dict[str, list[str]] = {}

    def work(name: str) -> None:
        together[name] = [f.text for f in engine.read(pictures[name])]

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert together == alone


# ---------------------------------------------------------------------------------------------- Baidu
def baidu_config(fake, **ocr: object) -> dict:
    return {
        **fake.config(),
        "access": {"admins": [1]},
        "plugins": {"ocr": {"enabled": True, "engine": "auto", **ocr}},
    }


async def test_auto_engine_uses_baidu_when_keys_are_configured(fake_baidu):
    fake_baidu.set_text(image("en_line.png"), ["Hello TSINGTAO 2026"])
    async with Harness(baidu_config(fake_baidu)) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("en_line.png")])
        (status,) = await bot.send("/plugins")
    assert reply.text == "Hello TSINGTAO 2026"
    assert fake_baidu.count("/rest/2.0/ocr/v1/general_basic") == 1
    assert "engine: baidu (general_basic) (auto)" in status.text


async def test_baidu_positional_api_goes_through_the_layout_and_the_language_argument(fake_baidu):
    lines = ["Coffee shop receipt", "Latte  2 x 28.00", "Bagel  1 x 12.50", "Total  68.50"]
    fake_baidu.set_text(image("receipt.jpg"), lines)
    async with Harness(baidu_config(fake_baidu, engine="baidu", api="accurate")) as bot:
        (reply,) = await bot.send("/ocr en", photos=[image("receipt.jpg")])
    assert reply.text.splitlines() == lines
    assert fake_baidu.last_params["/rest/2.0/ocr/v1/accurate"]["language_type"] == "ENG"


async def test_baidu_boxes_use_the_positional_twin_and_return_an_outlined_photo(fake_baidu):
    fake_baidu.set_text(image("zh_notice.png"), EXPECTED["zh_notice.png"])
    async with Harness(baidu_config(fake_baidu, api="general_basic")) as bot:
        text_reply, picture = await bot.send("/ocr boxes", photos=[image("zh_notice.png")])
    assert text_reply.text.splitlines() == EXPECTED["zh_notice.png"]
    assert fake_baidu.count("/rest/2.0/ocr/v1/general") == 1
    assert fake_baidu.count("/rest/2.0/ocr/v1/general_basic") == 0
    assert picture.photo is not None and Image.open(io.BytesIO(picture.photo)).format == "JPEG"


async def test_baidu_long_text_comes_as_a_text_file(fake_baidu):
    lines = [f"line {n:03d} " + "lorem ipsum dolor sit amet " * 3 for n in range(80)]
    fake_baidu.set_text(image("zh_beer.png"), lines)
    async with Harness(baidu_config(fake_baidu)) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("zh_beer.png")])
        body = "\n".join(line.strip() for line in lines)
        assert reply.text == message(bot, "ocr.long_text", chars=len(body))
    assert reply.document is not None and reply.document.filename.endswith(".txt")
    assert reply.document.data.decode("utf-8") == body


async def test_baidu_bad_images_are_refused_before_any_request(fake_baidu):
    async with Harness(baidu_config(fake_baidu)) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("truncated.jpg", BAD)])
        assert reply.text == message(bot, "error.image_truncated")
    assert fake_baidu.api_calls == 0


async def test_baidu_errors_reach_the_user_per_image(fake_baidu):
    fake_baidu.set_text(image("en_line.png"), ["Hello TSINGTAO 2026"])
    fake_baidu.inject(18, times=3, path="/rest/2.0/ocr/")  # QPS limit, retries included: this image only
    async with Harness(baidu_config(fake_baidu)) as bot:
        (reply,) = await bot.send("/ocr", photos=[image("en_line.png"), image("en_line.png")])
        sections = reply.text.split("\n\n")
        assert sections[0] == "Image 1:\n" + message(bot, "error.rate_limited")
        assert sections[1] == "Image 2:\nHello TSINGTAO 2026"


async def test_quota_used_up_mid_album_sends_what_was_read_says_the_rest_was_not_and_alerts_the_admins(fake_baidu):
    fake_baidu.set_text(image("en_line.png"), ["Hello TSINGTAO 2026"])
    fake_baidu.daily_limit = 1
    async with Harness(baidu_config(fake_baidu)) as bot:
        read, problem, alert = await bot.send("/ocr", photos=[image("en_line.png")] * 4)  # user 1 is the admin
        assert read.text.split("\n\n") == [
            "Image 1:\nHello TSINGTAO 2026",
            message(bot, "ocr.stopped", n=2, total=4),
        ]
        assert problem.text == message(bot, "error.provider_quota")
        assert alert.text.startswith("⚠️ aipbot needs its admin: /ocr failed") and "daily request limit" in alert.text
    assert fake_baidu.api_calls == 2  # images 3 and 4 were not sent to Baidu


async def test_misconfigured_baidu_on_the_first_image_of_an_album_makes_one_call_and_alerts_the_admins(fake_baidu):
    fake_baidu.inject(6, path="/rest/2.0/ocr/")  # no permission for OCR: only the admin can fix it
    async with Harness(baidu_config(fake_baidu)) as bot:
        problem, alert = await bot.send("/ocr", photos=[image("en_line.png")] * 3)
        assert problem.text == message(bot, "error.misconfigured")
        assert alert.text.startswith("⚠️ aipbot needs its admin: /ocr failed") and "no permission" in alert.text
    assert fake_baidu.count("/rest/2.0/ocr/v1/general_basic") == 1


async def test_engine_baidu_without_keys_tells_the_user_it_is_not_set_up():
    async with Harness({"access": {"admins": [1]}, "plugins": {"ocr": {"enabled": True, "engine": "baidu"}}}) as bot:
        reply, alert = await bot.send("/ocr", photos=[image("en_line.png")])  # user 1 is also the admin
        assert reply.text == message(bot, "error.misconfigured")
        assert alert.text.startswith("⚠️ aipbot needs its admin: /ocr failed") and "providers.baidu" in alert.text
        (status,) = await bot.send("/plugins")
    assert "no Baidu keys configured" in status.text
