"""The plugin test kit (core.contract.testing) and the plugin API it shows: a second step that is a button
(tests/rotate_plugin.py, ctx.expect_choice), the config given once (aipbot_configure), the English fallback of a
catalogue without Chinese; and the README's plugin guide showing exactly these files."""

import io
import logging
import re
from pathlib import Path

import pytest
from PIL import Image

from core.contract.chat import Button, Command, Context
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl
from core.contract.testing import Harness, assert_catalogue_complete, image, plugin_bot
from tests import rotate_plugin

ROOT = Path(__file__).resolve().parents[1]


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.size


async def test_rotate_asks_which_way_then_turns_the_photo_it_kept():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image(64, 48)])
        assert question.text == "Which way?"
        assert [b.text for b in question.buttons[0]] == ["↺ Left", "↻ Right", "Upside down"]
        [answer] = await bot.press(question.buttons[0][0])
    assert answer.photo is not None and size_of(answer.photo) == (48, 64)


async def test_rotate_in_chinese_and_upside_down():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image(64, 48)], language="zh")
        assert question.text == "往哪边转？" and question.buttons[0][2].text == "倒过来"
        [answer] = await bot.press(question.buttons[0][2], language="zh")
    assert answer.photo is not None and size_of(answer.photo) == (64, 48)


async def test_a_button_of_a_question_already_answered_has_expired():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image()])
        await bot.press(question.buttons[0][1])
        again = await bot.press(question.buttons[0][0])
    assert Harness.text(again) == "That button has expired. Please start again."


async def test_text_meanwhile_gets_the_hint_and_the_question_stays_open():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image(64, 48)])
        hint = Harness.text(await bot.send("left please"))
        [answer] = await bot.press(question.buttons[0][1])
    assert hint.startswith("Send me a photo, or a command.")
    assert answer.photo is not None and size_of(answer.photo) == (48, 64)


async def test_cancel_ends_the_question_and_its_buttons():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image()])
        await bot.send("/cancel")
        late = await bot.press(question.buttons[0][0])
    assert Harness.text(late) == "That button has expired. Please start again."


async def test_someone_else_pressing_the_button_does_not_answer_the_question():
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [question] = await bot.send("/rotate", photos=[image()], chat_id=-100, chat_type="group")
        stranger = await bot.press(question.buttons[0][0], user_id=2, chat_id=-100)
        [answer] = await bot.press(question.buttons[0][0], chat_id=-100)
    assert Harness.text(stranger) == "That button has expired. Please start again."
    assert answer.photo is not None


async def test_a_damaged_photo_is_refused_at_once_and_nothing_is_asked():
    damaged = (ROOT / "examples" / "bad" / "truncated.jpg").read_bytes()
    async with plugin_bot("rotate", rotate_plugin.Plugin) as bot:
        [refusal] = await bot.send("/rotate", photos=[damaged])
    assert refusal.text.startswith("This image is damaged or incomplete.") and not refusal.buttons


class Recorder:
    """A plugin that records its hooks, offers a choice with a button not made by ctx.button, and lacks zh."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def aipbot_config_schema(self) -> dict[str, Field]:
        return {"word": Field(str, default="hello")}

    @hookimpl
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        return {"en": {"recorder.help": "Record", "recorder.said": "said {word}"}, "zh": {"recorder.help": "记录"}}

    @hookimpl
    def aipbot_configure(self, config: dict, services: object) -> None:
        self.calls.append(f"configure {config['word']}")
        self.word = config["word"]

    @hookimpl
    def aipbot_commands(self) -> list[Command]:
        self.calls.append("commands")
        return [Command("recorder", "recorder.help", self.run)]

    async def run(self, ctx: Context) -> None:
        if ctx.args == ["forged"]:
            await ctx.expect_choice("x", [[Button("a link", url="https://example.com")]])
        await ctx.reply(ctx.t("recorder.said", word=self.word))


async def test_a_plugin_gets_its_config_once_before_its_commands():
    plugin = Recorder()
    async with plugin_bot("recorder", plugin, word="hi") as bot:
        said = Harness.text(await bot.send("/recorder"))
        await bot.send("/recorder")
    assert plugin.calls == ["configure hi", "commands"]
    assert said == "said hi"


async def test_a_text_missing_in_chinese_is_shown_in_english_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="core.runtime.plugins"):
        bot = plugin_bot("recorder", Recorder)
    [warning] = [r.getMessage() for r in caplog.records if "recorder" in r.getMessage()]
    assert "recorder.said: no zh text" in warning and "shown in English" in warning
    async with bot:
        assert Harness.text(await bot.send("/recorder", language="zh")) == "said hello"
    with pytest.raises(AssertionError, match=r"recorder\.said: no zh text"):
        assert_catalogue_complete(Recorder)


async def test_expect_choice_takes_only_buttons_made_with_ctx_button(caplog):
    async with plugin_bot("recorder", Recorder) as bot:
        with caplog.at_level(logging.ERROR):
            answer = Harness.text(await bot.send("/recorder forged"))
    assert answer == "Sorry, something went wrong on our side. Please try again in a moment."
    assert any(r.exc_info and "is not a button of /recorder" in str(r.exc_info[1]) for r in caplog.records)


def test_the_built_in_kit_users_have_complete_catalogues():
    assert_catalogue_complete(rotate_plugin.Plugin)


def readme_block(after: str) -> str:
    """The first fenced block of the README after the line ``after``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(after)
    match = re.search(r"```[a-z]*\n(.*?)```", text[start:], re.S)
    assert match is not None, after
    return match.group(1)


@pytest.mark.parametrize(
    ("marker", "path"),
    [
        ("test, `tests/example_plugin/test_imageinfo.py`:", "tests/example_plugin/test_imageinfo.py"),
        ("is `tests/rotate_plugin.py`", "tests/rotate_plugin.py"),
        (
            "`tests/example_plugin/aipbot_imageinfo.py`, which the tests install",
            "tests/example_plugin/aipbot_imageinfo.py",
        ),
    ],
)
def test_the_readme_shows_the_tested_code_as_it_is(marker, path):
    assert readme_block(marker) == (ROOT / path).read_text(encoding="utf-8")
