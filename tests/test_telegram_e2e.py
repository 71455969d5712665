"""End to end through the real python-telegram-bot stack against the fake Bot API on 127.0.0.1."""

import asyncio
import io
import logging

import pytest
from PIL import Image

from core.runtime.config import validate
from core.runtime.roles import TelegramProcess as TelegramTransport
from core.sending.rules import split_text
from tests import probe_plugin
from tests.harness import merge

ADMIN = 42


def png(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def telegram_config(fake, **overrides) -> dict:
    base = {
        **fake.config(album_wait=0.3),
        "access": {"admins": [ADMIN]},
        "storage": {"path": ":memory:"},
        "plugins": {"probe": {}},
    }
    return validate(merge(base, overrides))


@pytest.fixture
def running(fake_telegram, start_bot):
    """``await running(**config_overrides)`` starts the bot (with the probe plugin) on the fake Bot API."""

    async def start(**overrides) -> TelegramTransport:
        return await start_bot(telegram_config(fake_telegram, **overrides), {"probe": probe_plugin})

    return start


async def test_start_up_registers_the_command_menu_in_english_and_chinese(fake_telegram, running):
    await running()
    english = [c["command"] for c in fake_telegram.commands[""]]
    chinese = {c["command"]: c["description"] for c in fake_telegram.commands["zh"]}
    assert "echo" in english and "snap" in english and "help" in english and "cancel" in english
    assert "secret" not in english
    assert chinese["echo"] == "回显参数"


async def test_help_lists_only_enabled_plugin_commands(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/help")
    reply = await fake_telegram.bot_replied()
    assert "/echo — Echo the arguments" in reply.text
    assert "/imageinfo" not in reply.text


async def test_a_command_of_a_plugin_not_enabled_is_unknown(fake_telegram, running):
    await running(plugins={"probe": {"enabled": False}})
    fake_telegram.user_sends_text("/echo hi")
    reply = await fake_telegram.bot_replied()
    assert reply.text.startswith("I don't know /echo.")


async def test_admin_only_command_is_refused_to_others(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/secret", user_id=7)
    assert "admins only" in (await fake_telegram.bot_replied(7)).text
    fake_telegram.user_sends_text("/secret", user_id=ADMIN)
    assert (await fake_telegram.bot_replied(ADMIN)).text == "the secret"


async def test_photo_with_a_command_caption_is_routed_and_downloaded(fake_telegram, running):
    await running()
    data = png(64, 48)
    fake_telegram.user_sends_photo(data, caption="/snap")
    reply = await fake_telegram.bot_replied()
    assert reply.text == f"snap got 1 photos [{len(data)}] args=[]"
    assert fake_telegram.calls_of("getFile"), "the largest photo size is downloaded"
    assert fake_telegram.calls_of("sendChatAction")[0].params["action"] == "typing"


async def test_photo_after_a_command_goes_to_the_pending_command(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/snap en")
    assert (await fake_telegram.bot_replied()).text == "Now send the photo."
    fake_telegram.user_sends_photo(png())
    assert (await fake_telegram.bot_replied()).text.endswith("args=['en']")


async def test_an_image_sent_as_a_file_keeps_full_resolution(fake_telegram, running):
    await running()
    data = png(3000, 2000)
    fake_telegram.user_sends_document(data, file_name="scan.png", mime_type="image/png", caption="/snap")
    assert (await fake_telegram.bot_replied()).text == f"snap got 1 photos [{len(data)}] args=[]"


async def test_a_file_over_the_download_limit_is_refused_without_downloading(fake_telegram, running):
    await running()
    fake_telegram.user_sends_document(
        b"x", file_name="huge.png", mime_type="image/png", caption="/snap", file_size=25 * 1024 * 1024
    )
    reply = await fake_telegram.bot_replied()
    assert reply.text.startswith("This file is too large for me to download.")
    assert not fake_telegram.calls_of("getFile")


async def test_a_file_that_is_not_an_image_gets_a_clear_answer(fake_telegram, running):
    await running()
    fake_telegram.user_sends_document(b"%PDF-1.4", file_name="doc.pdf", mime_type="application/pdf", caption="/snap")
    assert (await fake_telegram.bot_replied()).text.startswith("This file is not an image.")


async def test_an_album_arrives_whole(fake_telegram, running):
    await running()
    images = [png(20 + i, 20) for i in range(3)]
    fake_telegram.user_sends_album(images, caption="/snap")
    reply = await fake_telegram.bot_replied()
    assert reply.text == f"snap got 3 photos {[len(i) for i in images]} args=[]"


async def test_a_photo_without_command_asks_with_buttons_and_the_button_routes_it(fake_telegram, running):
    await running()
    fake_telegram.user_sends_photo(png())
    question = await fake_telegram.bot_replied()
    assert question.text == "What should I do with this photo?"
    assert question.callback_data == ["_route:snap", "_route:pair"]
    fake_telegram.user_presses_button(question.result, "_route:snap")
    assert (await fake_telegram.bot_replied()).text.startswith("snap got 1 photos")
    assert fake_telegram.calls_of("answerCallbackQuery")


async def test_a_deep_link_reaches_its_plugin(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/ask")
    await fake_telegram.bot_replied()
    link = await fake_telegram.bot_replied()
    assert link.text == f"link https://t.me/{fake_telegram.bot_username}?start=ask-abc-1"
    fake_telegram.user_sends_text("/start ask-abc-1", user_id=5)
    assert (await fake_telegram.bot_replied(5)).text == "deep link abc-1 for 5"


async def test_allowed_users_keeps_strangers_out_politely(fake_telegram, running):
    await running(access={"admins": [ADMIN], "allowed_users": [1001]})
    fake_telegram.user_sends_text("/echo", user_id=666)
    assert "this bot is private" in (await fake_telegram.bot_replied(666)).text
    fake_telegram.user_sends_text("/echo", user_id=1001)
    assert (await fake_telegram.bot_replied(1001)).text == "hi"


async def test_chinese_users_get_chinese_replies(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/nope", language_code="zh-hans")
    assert (await fake_telegram.bot_replied()).text.startswith("我不认识 /nope")


def slow_echo(transport) -> asyncio.Event:
    """Make ``/echo`` wait until the returned event is set, then answer "slow done"."""
    release = asyncio.Event()

    async def slow(ctx):
        await release.wait()
        await ctx.reply("slow done")

    transport.app.router.commands["echo"].handler = slow
    return release


async def test_one_slow_job_does_not_stall_another_user(fake_telegram, running):
    transport = await running()
    release = slow_echo(transport)
    fake_telegram.user_sends_text("/echo", user_id=1)
    fake_telegram.user_sends_text("/nope", user_id=2)
    other = await fake_telegram.bot_replied(2)
    assert other.text.startswith("I don't know /nope")
    release.set()
    assert (await fake_telegram.bot_replied(1)).text == "slow done"


async def test_a_crash_is_logged_redacted_and_the_user_is_told(fake_telegram, running, caplog):
    from core.infra.redact import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    await running()
    with caplog.at_level(logging.ERROR):
        fake_telegram.user_sends_text("/boom")
        reply = await fake_telegram.bot_replied()
    assert reply.text.startswith("Sorry, something went wrong")
    assert fake_telegram.TOKEN not in caplog.text and "SHOULD-NOT-LEAK" not in caplog.text


async def test_a_long_reply_is_split_at_line_breaks(fake_telegram, running):
    transport = await running()
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(60))  # about 5,300 characters
    from core.contract.chat import Reply

    await transport.bot.send(1001, Reply(text))
    first = await fake_telegram.bot_replied(1001)
    second = await fake_telegram.bot_replied(1001)
    assert first.text + "\n" + second.text == text
    assert len(first.text) <= 4096 and first.text.endswith("x")


async def test_a_very_long_reply_is_sent_as_a_text_file(fake_telegram, running):
    transport = await running()
    from core.contract.chat import Reply

    text = "\n".join("y" * 100 for _ in range(200))  # 20,000 characters
    await transport.bot.send(1001, Reply(text))
    reply = await fake_telegram.bot_replied(1001)
    assert reply.method == "sendDocument"
    assert reply.file == ("text.txt", text.encode())


def test_split_text_cuts_overlong_lines_and_keeps_everything():
    text = "a" * 5000 + "\nb"
    pieces = split_text(text, limit=4096)
    assert [len(p) for p in pieces] == [4096, 906]
    assert "".join(pieces) == text


async def test_an_edited_message_does_not_run_its_command_again(fake_telegram, running):
    transport = await running()
    from telegram import Update

    message = fake_telegram.user_sends_text("/echo once")
    assert (await fake_telegram.bot_replied()).text == "hi once"
    edited = Update.de_json({"update_id": 99999, "edited_message": {**message, "text": "/echo twice"}}, None)
    await transport.intake.receive([edited.to_dict()])
    fake_telegram.user_sends_text("/echo after")
    assert (await fake_telegram.bot_replied()).text == "hi after"
