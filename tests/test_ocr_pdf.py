"""/ocr with PDF documents: text layers, scanned pages, page limit, progress, encrypted and broken files;
the transports pass PDFs on, and /facematch answers them with its usual "not an image"."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.console.terminal import parse_line
from core.contract.chat import Chat, User
from core.runtime.config import ConfigError, check_section, validate
from plugins.ocr import config_schema
from plugins.ocr.pdf import clean_text, is_pdf
from tests.harness import Harness, merge
from tests.pdf_samples import encrypted_pdf, scanned_pdf, text_pdf

DATA = Path(__file__).resolve().parent.parent / "examples"
LOCAL = {"plugins": {"ocr": {"enabled": True, "engine": "local"}}}
REPORT = ["Quarterly report", "Revenue 1200 (up 4%)", "Costs 800"]
NOTES = ["Second page", "Signed: A. Lovelace"]


def message(bot: Harness, key: str, **params: object) -> str:
    return bot.app.catalogue.text("en", key, **params)


def test_pdf_is_told_from_its_bytes_and_its_text_layer_is_cleaned():
    assert is_pdf(text_pdf([["x"]])) and is_pdf(b"\n\n%PDF-1.7 rest")
    assert not is_pdf((DATA / "text" / "en_line.png").read_bytes()) and not is_pdf(b"")
    assert clean_text("a  \r\nb\r\n\r\n\r\n\r\nc\r\n") == "a\nb\n\nc"


# ------------------------------------------------------------------------------------- text layer (no model)
async def test_a_pdf_with_a_text_layer_is_answered_page_by_page_with_progress_in_one_message():
    async with Harness(LOCAL) as bot:
        status, answer = await bot.send("/ocr", photos=[text_pdf([REPORT, NOTES])])
        assert status.text == message(bot, "ocr.pdf_progress", n=1, total=2)
        edits = [text for _, _, text in bot.transport.edits]
        assert edits == [message(bot, "ocr.pdf_progress", n=2, total=2), message(bot, "ocr.pdf_done", n=2, total=2)]
        assert {message_id for _, message_id, _ in bot.transport.edits} == {1}  # the status message, edited
    assert answer.text == "Page 1:\n" + "\n".join(REPORT) + "\n\nPage 2:\n" + "\n".join(NOTES)


async def test_a_one_page_pdf_gets_its_text_without_a_status_message():
    async with Harness(LOCAL) as bot:
        (answer,) = await bot.send("/ocr", photos=[text_pdf([REPORT])])
        assert not bot.transport.edits
    assert answer.text == "Page 1:\n" + "\n".join(REPORT)


async def test_a_pdf_of_200_pages_reads_the_configured_number_and_says_so():
    pdf = text_pdf([[f"This is page {n}"] for n in range(1, 201)])
    async with Harness(LOCAL) as bot:
        status, answer = await bot.send("/ocr", photos=[pdf])
        assert answer.text.startswith(message(bot, "ocr.pdf_page_limit", total=200, limit=20) + "\n\n")
        assert bot.transport.edits[-1][2] == message(bot, "ocr.pdf_done", n=20, total=200)
    assert "Page 20:\nThis is page 20" in answer.text and "Page 21" not in answer.text
    assert status.text == "Reading page 1 of 20…"


async def test_a_long_pdf_comes_as_a_text_file():
    pdf = text_pdf([[f"Line {n} of page {p} with some words to fill it" for n in range(30)] for p in range(1, 9)])
    config = merge(LOCAL, {"plugins": {"ocr": {"max_pdf_pages": 8}}})
    async with Harness(config) as bot:
        *_, answer = await bot.send("/ocr", photos=[pdf])
    assert answer.document is not None and answer.document.filename.endswith(".txt")
    body = answer.document.data.decode("utf-8")
    assert body.startswith("Page 1:\nLine 0 of page 1") and "Page 8:\nLine 0 of page 8" in body


def test_the_page_limit_is_validated():
    with pytest.raises(ConfigError, match=r"plugins\.ocr\.max_pdf_pages: .*at least 1"):
        check_section(config_schema(), {"max_pdf_pages": 0}, "plugins.ocr")


async def test_an_encrypted_pdf_gets_a_clear_answer_in_the_users_language():
    pdf = encrypted_pdf(text_pdf([REPORT]))
    async with Harness(LOCAL) as bot:
        (en,) = await bot.send("/ocr", photos=[pdf])
        (zh,) = await bot.send("/ocr", photos=[pdf], language="zh")
        assert en.text == message(bot, "ocr.pdf_encrypted")
        assert zh.text == bot.app.catalogue.text("zh", "ocr.pdf_encrypted")


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.7\n" + b"\x00garbage" * 50, text_pdf([REPORT])[:60]],
    ids=["garbage-after-header", "cut-short"],
)
async def test_a_broken_pdf_gets_a_clear_answer(data):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[data])
        assert reply.text == message(bot, "ocr.pdf_broken")


async def test_a_pdf_in_an_album_is_one_labelled_section_among_the_images():
    async with Harness(LOCAL) as bot:
        tiny = (DATA / "bad" / "tiny.png").read_bytes()
        *_, answer = await bot.send("/ocr", photos=[text_pdf([REPORT, NOTES]), tiny])
    first, *rest = answer.text.split("\n\nImage 2:\n")
    assert first.startswith("Image 1:\nPage 1:\nQuarterly report") and "Page 2:\nSecond page" in first
    assert rest == [message(bot, "error.image_too_small", width=8, height=8)]


async def test_facematch_answers_a_pdf_with_its_not_an_image_error():
    config = {"plugins": {"facematch": {"enabled": True, "engine": "local"}}}
    async with Harness(config) as bot:
        replies = await bot.send("/facematch", photos=[text_pdf([REPORT]), text_pdf([NOTES])])
    problem = message(bot, "error.image_not_image")
    assert len(replies) == 1 and problem in replies[0].text


def test_console_attaches_a_pdf_file_as_a_document_with_its_mime_type(tmp_path, monkeypatch):
    (tmp_path / "scan.pdf").write_bytes(text_pdf([REPORT]))
    monkeypatch.chdir(tmp_path)
    incoming = parse_line("/ocr scan.pdf", User(1, "Ada"), Chat(1), [], 20)
    assert not isinstance(incoming, str)
    (photo,) = incoming.photos
    assert photo.mime_type == "application/pdf" and photo.file_name == "scan.pdf" and incoming.text == "/ocr"
    assert parse_line("/ocr missing.pdf", User(1, "Ada"), Chat(1), [], 20) == "no such file: missing.pdf"


# ------------------------------------------------------------------------------------- Telegram transport
@pytest.fixture
def telegram_bot(fake_telegram, start_bot):
    async def start(plugins: dict) -> None:
        config = {
            "telegram": {
                "token": fake_telegram.TOKEN,
                "base_url": fake_telegram.base_url,
                "base_file_url": fake_telegram.base_file_url,
                "poll_timeout": 1,
            },
            "storage": {"path": ":memory:"},
            "plugins": plugins,
        }
        await start_bot(validate(config))

    return start


async def test_telegram_passes_a_pdf_document_to_ocr(telegram_bot, fake_telegram):
    await telegram_bot({"ocr": {"engine": "local"}})
    fake_telegram.user_sends_document(
        text_pdf([REPORT]), file_name="report.pdf", mime_type="application/pdf", caption="/ocr"
    )
    reply = await fake_telegram.bot_replied(timeout=30)
    assert reply.text == "Page 1:\n" + "\n".join(REPORT)


async def test_telegram_pdf_sent_to_facematch_is_not_an_image(telegram_bot, fake_telegram):
    await telegram_bot({"facematch": {"engine": "local"}})
    fake_telegram.user_sends_document(
        text_pdf([REPORT]), file_name="scan.pdf", mime_type="application/octet-stream", caption="/facematch"
    )
    reply = await fake_telegram.bot_replied(timeout=30)
    assert "not an image" in reply.text


# ------------------------------------------------------------------------------------- scanned pages (model)
@pytest.mark.slow
async def test_a_scanned_pdf_has_each_page_rendered_and_read():
    pages = [Image.open(DATA / "text" / name) for name in ("en_line.png", "zh_notice.png")]
    pdf = scanned_pdf(pages)
    async with Harness(LOCAL) as bot:
        _status, answer = await bot.send("/ocr", photos=[pdf])
    first, second = answer.text.split("\n\n")
    assert "".join(first.split()) == "Page1:HelloTSINGTAO2026"
    assert second.startswith("Page 2:\n") and len(second.splitlines()) == 4  # label + the notice's three lines


@pytest.mark.slow
async def test_a_blank_scanned_page_says_no_text_for_that_page():
    pdf = scanned_pdf([Image.new("RGB", (600, 800), "white")])
    async with Harness(LOCAL) as bot:
        (answer,) = await bot.send("/ocr", photos=[pdf])
        assert answer.text == "Page 1:\n" + message(bot, "ocr.no_text")


async def test_telegram_file_named_pdf_that_is_a_damaged_image_says_so(telegram_bot, fake_telegram):
    await telegram_bot({"ocr": {"engine": "local"}})
    fake_telegram.user_sends_document(
        (DATA / "bad" / "truncated.jpg").read_bytes(), file_name="scan.pdf", mime_type="application/pdf", caption="/ocr"
    )
    reply = await fake_telegram.bot_replied(timeout=30)
    assert "damaged or incomplete" in reply.text


async def test_with_baidu_a_pdf_text_layer_costs_no_baidu_call(fake_baidu):
    config = {**fake_baidu.config(), "plugins": {"ocr": {"enabled": True, "engine": "baidu"}}}
    async with Harness(config) as bot:
        (reply,) = await bot.send("/ocr", photos=[text_pdf([REPORT])])
    assert reply.text == "Page 1:\n" + "\n".join(REPORT)
    assert fake_baidu.api_calls == 0
