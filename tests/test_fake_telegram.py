"""The fake Bot API speaks the protocol the way python-telegram-bot v22 expects (real PTB stack, no network)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import io
import json

import httpx
import pytest
from PIL import Image
from telegram import Bot, BotCommand, BotCommandScopeAllPrivateChats, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from tests.fakes.server import LocalServer, Request
from tests.fakes.telegram import Call, FakeTelegram, decode_params
from tests.servers import free_port

CHAT = 1001  # the default user's id, which is the id of their private chat


def png(width: int = 640, height: int = 480, color: str = "red") -> bytes:
    """A real PNG of the given size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def bot(fake_telegram: FakeTelegram):
    """An initialized ``telegram.Bot`` pointed at the fake."""
    async with Bot(
        FakeTelegram.TOKEN, base_url=fake_telegram.base_url, base_file_url=fake_telegram.base_file_url
    ) as bot:
        yield bot


# -- telegram.Bot against the fake ------------------------------------------------------------------------------------


async def test_get_me(bot: Bot, fake_telegram: FakeTelegram) -> None:
    me = await bot.get_me()
    assert me.username == fake_telegram.bot_username == "aipbot_test_bot"
    assert me.is_bot
    assert me.id == int(FakeTelegram.TOKEN.split(":")[0])
    assert bot.username == "aipbot_test_bot"  # Bot.initialize() called getMe too
    assert fake_telegram.calls_of("getMe")


async def test_send_message_with_inline_keyboard(bot: Bot, fake_telegram: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Yes", callback_data="ocr:yes"), InlineKeyboardButton("No", callback_data="ocr:no")],
            [InlineKeyboardButton("Docs", url="https://example.org")],
        ]
    )
    sent = await bot.send_message(CHAT, "<b>Pick</b> one", parse_mode=ParseMode.HTML, reply_markup=keyboard)

    call = await fake_telegram.bot_replied(CHAT)
    assert call.method == "sendMessage"
    assert call.text == "<b>Pick</b> one"
    assert call.params["parse_mode"] == "HTML"
    assert call.chat_id == CHAT  # arrived as the form string "1001", decoded to an int
    assert [[b["text"] for b in row] for row in call.buttons] == [["Yes", "No"], ["Docs"]]
    assert call.callback_data == ["ocr:yes", "ocr:no"]
    # PTB parsed the answer back into a Message, keyboard included
    assert sent.message_id == call.result["message_id"]
    assert sent.chat.id == CHAT
    assert sent.from_user.username == "aipbot_test_bot"
    assert sent.reply_markup == keyboard


async def test_message_ids_increase_per_chat(bot: Bot, fake_telegram: FakeTelegram) -> None:
    first = await bot.send_message(CHAT, "one")
    user = fake_telegram.user_sends_text("hi")
    second = await bot.send_message(CHAT, "two")
    other = await bot.send_message(2002, "elsewhere")
    assert first.message_id < user["message_id"] < second.message_id
    assert other.message_id == 1
    assert [m["message_id"] for m in fake_telegram.messages[CHAT]] == [1, 2, 3]


async def test_bot_replied_consumes_in_order_and_reports_on_timeout(bot: Bot, fake_telegram: FakeTelegram) -> None:
    await bot.send_message(CHAT, "one")
    await bot.send_message(CHAT, "two")
    assert (await fake_telegram.bot_replied()).text == "one"
    assert (await fake_telegram.bot_replied()).text == "two"
    with pytest.raises(AssertionError, match="sendMessage chat_id=1001 text='one'"):
        await fake_telegram.bot_replied(timeout=0.05)


async def test_send_document_multipart(bot: Bot, fake_telegram: FakeTelegram) -> None:
    data = bytes(range(256)) * 10  # binary, with CR/LF bytes inside
    sent = await bot.send_document(CHAT, data, filename="result.bin", caption="your file")

    call = await fake_telegram.bot_replied()
    assert call.method == "sendDocument"
    assert call.files == {"document": ("result.bin", data)}
    assert call.file == ("result.bin", data)
    assert call.text == "your file"
    assert call.chat_id == CHAT
    assert sent.document.file_name == "result.bin"
    assert sent.document.file_size == len(data)
    assert sent.caption == "your file"
    # what the bot uploaded can be fetched back, as from Telegram
    assert bytes(await (await bot.get_file(sent.document.file_id)).download_as_bytearray()) == data


async def test_send_photo(bot: Bot, fake_telegram: FakeTelegram) -> None:
    image = png(400, 300)
    sent = await bot.send_photo(CHAT, image, caption="annotated")
    call = await fake_telegram.bot_replied(methods=["sendPhoto"])
    assert call.files["photo"][1] == image
    assert call.text == "annotated"
    assert (sent.photo[-1].width, sent.photo[-1].height) == (400, 300)


async def test_get_file_downloads_what_the_user_sent(bot: Bot, fake_telegram: FakeTelegram) -> None:
    image = png(1024, 768)
    message = fake_telegram.user_sends_photo(image, caption="read this")
    sizes = message["photo"]
    assert len(sizes) >= 2
    assert (sizes[-1]["width"], sizes[-1]["height"], sizes[-1]["file_size"]) == (1024, 768, len(image))
    assert max(sizes[0]["width"], sizes[0]["height"]) <= 90
    assert len({s["file_id"] for s in sizes}) == len({s["file_unique_id"] for s in sizes}) == len(sizes)

    largest = await bot.get_file(sizes[-1]["file_id"])
    assert largest.file_size == len(image)
    assert largest.file_path.startswith(fake_telegram.base_file_url + FakeTelegram.TOKEN + "/")
    assert bytes(await largest.download_as_bytearray()) == image
    thumbnail = bytes(await (await bot.get_file(sizes[0]["file_id"])).download_as_bytearray())
    assert Image.open(io.BytesIO(thumbnail)).size == (sizes[0]["width"], sizes[0]["height"])

    pdf = b"%PDF-1.4\n" + b"\x00\xff" * 100
    doc = fake_telegram.user_sends_document(pdf, file_name="scan.pdf", mime_type="application/pdf")
    assert doc["document"]["file_size"] == len(pdf)
    downloaded = await (await bot.get_file(doc["document"]["file_id"])).download_as_bytearray()
    assert bytes(downloaded) == pdf


async def test_get_file_refuses_big_and_unknown_files(bot: Bot, fake_telegram: FakeTelegram) -> None:
    doc = fake_telegram.user_sends_document(
        b"tiny", file_name="huge.zip", mime_type="application/zip", file_size=25 * 1024 * 1024
    )
    assert doc["document"]["file_size"] == 25 * 1024 * 1024
    with pytest.raises(BadRequest, match="File is too big"):
        await bot.get_file(doc["document"]["file_id"])
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("nope")


async def test_set_and_get_my_commands(bot: Bot, fake_telegram: FakeTelegram) -> None:
    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("ocr", "Read text")])
    await bot.set_my_commands([BotCommand("ocr", "Texte lire")], language_code="fr")
    await bot.set_my_commands([BotCommand("help", "Help")], scope=BotCommandScopeAllPrivateChats())

    assert fake_telegram.commands == {
        "": [{"command": "start", "description": "Start"}, {"command": "ocr", "description": "Read text"}],
        "fr": [{"command": "ocr", "description": "Texte lire"}],
    }
    assert fake_telegram.scoped_commands[("all_private_chats", "")] == [{"command": "help", "description": "Help"}]
    assert [c.command for c in await bot.get_my_commands()] == ["start", "ocr"]
    assert [c.description for c in await bot.get_my_commands(language_code="fr")] == ["Texte lire"]
    assert await bot.get_my_commands(language_code="de") == ()
    assert [c.command for c in await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats())] == ["help"]
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([BotCommand("OCR", "uppercase is refused")])


async def test_delete_message_allowed_and_refused(bot: Bot, fake_telegram: FakeTelegram) -> None:
    first = await bot.send_message(CHAT, "one")
    second = await bot.send_message(CHAT, "two")
    assert await bot.delete_message(CHAT, first.message_id)
    assert fake_telegram.deleted == [(CHAT, first.message_id)]
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(CHAT, first.message_id)

    fake_telegram.can_delete = False
    with pytest.raises(BadRequest, match="Message can't be deleted"):
        await bot.delete_message(CHAT, second.message_id)
    assert fake_telegram.deleted == [(CHAT, first.message_id)]
    assert fake_telegram.calls_of("deleteMessage")[-1].error == "Bad Request: message can't be deleted"


async def test_edit_message_text(bot: Bot, fake_telegram: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup.from_button(InlineKeyboardButton("Go", callback_data="go"))
    sent = await bot.send_message(CHAT, "Working…", reply_markup=keyboard)
    edited = await bot.edit_message_text("Done", chat_id=CHAT, message_id=sent.message_id)
    assert edited.text == "Done"
    assert edited.reply_markup is None  # no reply_markup in the edit: Telegram drops the keyboard
    assert edited.edit_date is not None
    assert fake_telegram.messages[CHAT][-1]["text"] == "Done"
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Done", chat_id=CHAT, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=CHAT, message_id=999)


async def test_telegram_style_validation(bot: Bot, fake_telegram: FakeTelegram) -> None:
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(CHAT, "1 < 2 <b>bold", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match="unsupported start tag"):
        await bot.send_message(CHAT, "<div>x</div>", parse_mode=ParseMode.HTML)
    await bot.send_message(CHAT, "1 &lt; 2 <a href='https://x.org/?a=1&amp;b=2'>link</a>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="reserved"):
        await bot.send_message(CHAT, "Done.", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="character '\\)' is reserved"):
        await bot.send_message(CHAT, r"score \(95%\) \(ok)", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="unsupported html entity"):
        await bot.send_message(CHAT, "a &nbsp; b", parse_mode=ParseMode.HTML)
    await bot.send_message(CHAT, "*Done*\\. `a.b` [x](https://x.org/a.b)\n>quoted", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_document(CHAT, b"x", filename="a.txt", caption="c" * 1025)
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(
            CHAT, "x", reply_markup=InlineKeyboardMarkup.from_button(InlineKeyboardButton("b", callback_data="d" * 65))
        )
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(CHAT, "x", reply_to_message_id=999)


async def test_reply_parameters(bot: Bot, fake_telegram: FakeTelegram) -> None:
    user = fake_telegram.user_sends_text("photo please")
    sent = await bot.send_message(CHAT, "here", reply_to_message_id=user["message_id"])
    call = await fake_telegram.bot_replied()
    assert call.params["reply_parameters"]["message_id"] == user["message_id"]
    assert sent.reply_to_message.text == "photo please"


async def test_wrong_token_and_unknown_method(fake_telegram: FakeTelegram) -> None:
    wrong = Bot("123456789:AAE" + "0" * 32, base_url=fake_telegram.base_url, base_file_url=fake_telegram.base_file_url)
    with pytest.raises(InvalidToken):
        await wrong.initialize()
    async with fake_telegram.bot() as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("fooBar")
    assert fake_telegram.calls[-1].method == "fooBar"
    assert fake_telegram.calls[-1].error == "Not Found"


async def test_raw_protocol(fake_telegram: FakeTelegram) -> None:
    """JSON, urlencoded and GET query parameters are all accepted, and answers have Telegram's shape."""
    url = fake_telegram.base_url + FakeTelegram.TOKEN
    async with httpx.AsyncClient() as client:
        answer = (await client.post(f"{url}/sendMessage", json={"chat_id": CHAT, "text": "json"})).json()
        assert answer["ok"] is True
        assert answer["result"]["text"] == "json"
        form = {
            "chat_id": "1001",
            "text": "123",
            "reply_markup": '{"inline_keyboard": [[{"text": "a", "callback_data": "1"}]]}',
        }
        answer = (await client.post(f"{url}/sendmessage", data=form)).json()
        assert answer["result"]["text"] == "123"  # a text stays a string even if it looks like JSON
        assert answer["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "1"
        assert (await client.get(f"{url}/getMe")).json()["result"]["username"] == "aipbot_test_bot"
        response = await client.post(f"{url}/noSuchMethod")
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        response = await client.post(fake_telegram.base_url + "1:wrong/getMe")
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
        response = await client.get(fake_telegram.base_file_url + FakeTelegram.TOKEN + "/photos/nope.jpg")
        assert response.status_code == 404
    assert [c.text for c in fake_telegram.calls_of("sendMessage")] == ["json", "123"]


def test_decode_params_multipart_fields() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n-100123\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="caption"\r\n\r\ntrue\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="disable_notification"\r\n\r\ntrue\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="document"; filename="a b.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nline1\r\nline2\r\n"
        b"--XyZ--\r\n"
    )
    params, files = decode_params(body, "multipart/form-data; boundary=XyZ")
    assert params == {"chat_id": -100123, "caption": "true", "disable_notification": True}
    assert files == {"document": ("a b.txt", b"line1\r\nline2")}


async def test_get_updates_long_poll_and_offset(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.long_poll_cap = 30  # the poll below can only end early because an update arrives
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await asyncio.sleep(0.05)
    fake_telegram.user_sends_text("/start")
    updates = await asyncio.wait_for(poll, timeout=10)
    assert [u.message.text for u in updates] == ["/start"]
    assert updates[0].message.entities[0].type == "bot_command"

    fake_telegram.long_poll_cap = 0
    again = await bot.get_updates(offset=updates[0].update_id, timeout=5)
    assert [u.update_id for u in again] == [updates[0].update_id]  # not confirmed yet
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=5) == ()
    assert fake_telegram.pending_updates == []


# -- a real Application polling the fake ------------------------------------------------------------------------------


async def start(update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot.send_chat_action(update.effective_chat.id, "typing")
    keyboard = InlineKeyboardMarkup.from_row(
        [
            InlineKeyboardButton("English", callback_data="lang:en"),
            InlineKeyboardButton("中文", callback_data="lang:zh"),
        ]
    )
    await update.message.reply_text(f"Hello {update.effective_user.first_name}", reply_markup=keyboard)


async def echo(update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_text(f"echo: {update.message.text}", do_quote=True)


async def photo(update, context: ContextTypes.DEFAULT_TYPE) -> None:
    file = await update.message.photo[-1].get_file()
    data = await file.download_as_bytearray()
    await update.message.reply_text(f"{update.message.media_group_id} {len(data)} {update.message.caption}")


async def button(update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer("Saved")
    await query.edit_message_text(f"Language: {query.data.split(':')[1]}")


@pytest.fixture
async def app(fake_telegram: FakeTelegram):
    """An Application with the handlers above, polling the fake."""
    application = fake_telegram.app_builder().build()
    application.add_handler(CommandHandler("start", start))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    application.add_handler(MessageHandler(filters.PHOTO, photo))
    application.add_handler(CallbackQueryHandler(button, pattern=r"^lang:"))
    async with fake_telegram.polling(application):
        yield application


async def test_application_command_and_text(app, fake_telegram: FakeTelegram) -> None:
    fake_telegram.user_sends_text("/start", first_name="Grace")
    await fake_telegram.wait_for("sendChatAction", chat_id=CHAT, action="typing")
    reply = await fake_telegram.bot_replied(CHAT)
    assert reply.text == "Hello Grace"
    assert reply.callback_data == ["lang:en", "lang:zh"]

    asked = fake_telegram.user_sends_text("what is this?", user_id=7, username="grace")
    echo_reply = await fake_telegram.bot_replied(7)
    assert echo_reply.text == "echo: what is this?"
    assert echo_reply.params["reply_parameters"]["message_id"] == asked["message_id"]
    assert app.bot.username == "aipbot_test_bot"
    assert fake_telegram.webhook_deleted >= 1  # start_polling deletes the webhook first


async def test_application_album(app, fake_telegram: FakeTelegram) -> None:
    images = [png(300, 200, "red"), png(200, 300, "green"), png(50, 50, "blue")]
    messages = fake_telegram.user_sends_album(images, caption="three pages", chat_type="group", user_id=42)
    group = messages[0]["media_group_id"]
    assert {m["media_group_id"] for m in messages} == {group}
    assert all(m["chat"]["id"] == FakeTelegram.DEFAULT_GROUP_ID for m in messages)

    replies = [await fake_telegram.bot_replied(FakeTelegram.DEFAULT_GROUP_ID) for _ in images]
    assert sorted(r.text for r in replies) == sorted(
        [f"{group} {len(images[0])} three pages", f"{group} {len(images[1])} None", f"{group} {len(images[2])} None"]
    )


async def test_application_button_press(app, fake_telegram: FakeTelegram) -> None:
    fake_telegram.user_sends_text("/start")
    menu: Call = await fake_telegram.bot_replied()
    query = fake_telegram.user_presses_button(menu, "lang:zh")

    answer = await fake_telegram.wait_for("answerCallbackQuery", callback_query_id=query["id"])
    assert answer.ok
    assert answer.text == "Saved"
    edit = await fake_telegram.wait_for("editMessageText", message_id=menu.result["message_id"])
    assert edit.text == "Language: zh"
    assert fake_telegram.messages[CHAT][-1]["text"] == "Language: zh"
    with pytest.raises(AssertionError, match="no button"):
        fake_telegram.user_presses_button(menu, "lang:en")  # the edit removed the keyboard


# -- scripted faults --------------------------------------------------------------------------------------------------


#: PTB 22 warns that ``RetryAfter.retry_after`` becomes a timedelta (PTB_TIMEDELTA); both are fine here.
ptb_timedelta_warning = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")


def retry_seconds(error: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds, whether PTB gives an int or a timedelta."""
    value = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else value


@ptb_timedelta_warning
async def test_fail_429_has_no_side_effect_and_the_retry_succeeds(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendMessage", times=2, kind="429", retry_after=2)
    for _ in range(2):
        with pytest.raises(RetryAfter) as error:
            await bot.send_message(CHAT, "hello")
        assert retry_seconds(error.value) == 2
    assert fake_telegram.messages.get(CHAT, []) == []  # nothing delivered
    sent = await bot.send_message(CHAT, "hello")

    calls = fake_telegram.calls_of("sendMessage")
    assert [(c.status, c.fault) for c in calls] == [(429, "429"), (429, "429"), (200, None)]
    assert calls[0].error == "Too Many Requests: retry after 2"
    assert calls[0].at <= calls[1].at <= calls[2].at
    assert [m["message_id"] for m in fake_telegram.messages[CHAT]] == [sent.message_id]
    assert (await fake_telegram.bot_replied()).result["message_id"] == sent.message_id  # faulted calls are skipped


async def test_fail_429_raw_answer_and_timing(fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendMessage", kind="429", retry_after=1)
    url = f"{fake_telegram.base_url}{FakeTelegram.TOKEN}/sendMessage"
    async with httpx.AsyncClient() as client:
        first = await client.post(url, json={"chat_id": CHAT, "text": "x"})
        assert first.status_code == 429
        assert first.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }
        await asyncio.sleep(first.json()["parameters"]["retry_after"])
        assert (await client.post(url, json={"chat_id": CHAT, "text": "x"})).status_code == 200
    failed, retried = fake_telegram.calls_of("sendMessage")
    assert retried.at - failed.at >= 1


async def test_fail_5xx_html_and_json(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendDocument", kind="5xx")
    with pytest.raises(NetworkError, match=r"Bad Gateway \(502\)"):
        await bot.send_document(CHAT, b"data", filename="a.txt")
    fake_telegram.fail("sendMessage", kind="5xx", status=500, html=False)
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.send_message(CHAT, "x")
    assert fake_telegram.messages.get(CHAT, []) == []
    assert [c.status for c in fake_telegram.calls if c.method.startswith("send")] == [502, 500]
    await bot.send_document(CHAT, b"data", filename="a.txt")
    async with httpx.AsyncClient() as client:
        fake_telegram.fail("getMe", kind="5xx")
        page = await client.get(f"{fake_telegram.base_url}{FakeTelegram.TOKEN}/getMe")
    assert page.status_code == 502
    assert page.headers["content-type"] == "text/html"
    assert b"<center>nginx" in page.content


async def test_fail_400_with_a_chosen_description(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendPhoto", kind="400", description="wrong file identifier/HTTP URL specified")
    with pytest.raises(BadRequest, match="Wrong file identifier/http url specified"):
        await bot.send_photo(CHAT, png(10, 10))
    assert fake_telegram.calls_of("sendPhoto")[0].error == "Bad Request: wrong file identifier/HTTP URL specified"
    assert fake_telegram.messages.get(CHAT, []) == []
    assert (await bot.send_photo(CHAT, png(10, 10))).photo


async def test_fail_drop_and_stall(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendMessage", kind="drop")
    with pytest.raises(NetworkError) as error:
        await bot.send_message(CHAT, "lost")
    assert not isinstance(error.value, TimedOut)
    fake_telegram.fail("sendMessage", kind="stall", delay=0.3)
    with pytest.raises(TimedOut):
        await bot.send_message(CHAT, "slow", read_timeout=0.1)
    assert (await bot.send_message(CHAT, "finally")).text == "finally"
    await asyncio.sleep(0.4)  # a stalled call is recorded when the server gives up on it
    calls = sorted(fake_telegram.calls_of("sendMessage"), key=lambda call: call.at)
    assert [(c.text, c.fault, c.status) for c in calls] == [
        ("lost", "drop", None),
        ("slow", "stall", None),
        ("finally", None, 200),
    ]
    assert [m["text"] for m in fake_telegram.messages[CHAT]] == ["finally"]


async def test_failed_get_updates_confirms_nothing(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.long_poll_cap = 0
    fake_telegram.user_sends_text("one")
    first = await bot.get_updates()
    fake_telegram.fail("getUpdates", kind="5xx")
    with pytest.raises(NetworkError):
        await bot.get_updates(offset=first[0].update_id + 1)
    assert [u["message"]["text"] for u in fake_telegram.pending_updates] == ["one"]


def test_fail_refuses_unknown_kinds(fake_telegram: FakeTelegram) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        fake_telegram.fail("sendMessage", kind="teapot")


# -- flood control ----------------------------------------------------------------------------------------------------


@ptb_timedelta_warning
async def test_rate_limit_per_chat_and_overall(bot: Bot, fake_telegram: FakeTelegram) -> None:
    for _ in range(5):
        await bot.send_message(CHAT, "free")  # off by default
    fake_telegram.limit_rate(per_chat=1.0, chat_burst=3)
    for _ in range(3):
        await bot.send_message(CHAT, "burst")
    with pytest.raises(RetryAfter) as error:
        await bot.send_message(CHAT, "too fast")
    assert retry_seconds(error.value) == 1
    await bot.send_message(2002, "another chat is fine")
    assert "too fast" not in [m["text"] for m in fake_telegram.messages[CHAT]]
    assert fake_telegram.calls_of("sendMessage")[-2].fault == "rate"

    fake_telegram.limit_rate(None, overall=4, overall_burst=2)
    await bot.send_message(3003, "a")
    await bot.send_message(3004, "b")
    with pytest.raises(RetryAfter):
        await bot.send_message(3005, "c")
    await asyncio.sleep(0.3)  # 4/s: a send is allowed again after 0.25 s
    await bot.send_message(3005, "c")

    fake_telegram.limit_rate(None, None)
    for _ in range(5):
        await bot.send_message(CHAT, "free again")


# -- webhooks ---------------------------------------------------------------------------------------------------------


class Receiver(LocalServer):
    """A webhook target: records every request (headers, JSON update) and answers the scripted *statuses*, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], dict]] = []

    def handle_request(self, request: Request) -> tuple[int, str, bytes]:
        self.received.append((dict(request.headers), json.loads(request.body)))
        status = self.statuses.pop(0) if self.statuses else 200
        return status, "text/plain", b""

    @property
    def url(self) -> str:
        return f"{self.endpoint}/hook"

    @property
    def texts(self) -> list[str]:
        return [update["message"]["text"] for _, update in self.received]


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


async def test_webhook_delivery_with_secret(bot: Bot, fake_telegram: FakeTelegram, receiver: Receiver) -> None:
    fake_telegram.user_sends_text("before")  # pending updates are delivered once the webhook is set
    assert await bot.set_webhook(receiver.url, secret_token="s3cret-Token_1", max_connections=5)
    info = await bot.get_webhook_info()
    assert (info.url, info.max_connections, info.has_custom_certificate) == (receiver.url, 5, False)
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await bot.get_updates()

    fake_telegram.user_sends_text("after")
    deliveries = await fake_telegram.webhook_done(2)
    assert receiver.texts == ["before", "after"]
    headers, update = receiver.received[0]
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret-Token_1"
    assert headers["Content-Type"] == "application/json"
    assert update["update_id"] == deliveries[0].update["update_id"]
    assert [(d.status, d.attempt, d.url) for d in deliveries] == [(200, 1, receiver.url)] * 2
    assert fake_telegram.pending_updates == []
    assert (await bot.get_webhook_info()).pending_update_count == 0


async def test_webhook_redelivers_after_500(bot: Bot, fake_telegram: FakeTelegram) -> None:
    with Receiver(500, 503) as receiver:
        await bot.set_webhook(receiver.url)
        fake_telegram.user_sends_text("again")
        fake_telegram.user_sends_text("next")
        deliveries = await fake_telegram.webhook_done(2)
        assert [(d.status, d.attempt) for d in deliveries] == [(500, 1), (503, 2), (200, 3), (200, 1)]
        assert receiver.texts == ["again", "again", "again", "next"]  # in order: "next" waited
        assert "X-Telegram-Bot-Api-Secret-Token" not in receiver.received[0][0]
        assert deliveries[1].at - deliveries[0].at >= fake_telegram.webhook_backoff
        info = await bot.get_webhook_info()
        assert info.last_error_message == "Wrong response from the webhook: 503 Service Unavailable"


async def test_webhook_redelivers_after_refused_connection(bot: Bot, fake_telegram: FakeTelegram) -> None:
    port = free_port()
    fake_telegram.webhook_retries = 2
    await bot.set_webhook(f"http://127.0.0.1:{port}/hook")
    fake_telegram.user_sends_text("nobody home")
    deliveries = await fake_telegram.webhook_done()
    assert [(d.status, d.error, d.attempt) for d in deliveries] == [(None, "Connection refused", n) for n in (1, 2, 3)]
    assert (await bot.get_webhook_info()).last_error_message == "Connection refused"
    assert fake_telegram.pending_updates == []  # given up after the retries

    with Receiver() as receiver:  # the receiver comes up: the next update gets through after one refusal
        fake_telegram.balance_webhook(f"http://127.0.0.1:{port}/hook", receiver.url)
        fake_telegram.user_sends_text("second try")
        deliveries = (await fake_telegram.webhook_done(2))[3:]
        assert [(d.error, d.url) for d in deliveries] == [
            ("Connection refused", f"http://127.0.0.1:{port}/hook"),
            (None, receiver.url),
        ]
        assert receiver.texts == ["second try"]


async def test_webhook_balanced_over_two_front_ends(bot: Bot, fake_telegram: FakeTelegram) -> None:
    with Receiver() as one, Receiver() as two:
        await bot.set_webhook(one.url, secret_token="lb")
        fake_telegram.balance_webhook(one.url, two.url)
        for n in range(4):
            fake_telegram.user_sends_text(f"m{n}")
        await fake_telegram.webhook_done(4)
        assert (one.texts, two.texts) == (["m0", "m2"], ["m1", "m3"])
        assert all(headers["X-Telegram-Bot-Api-Secret-Token"] == "lb" for headers, _ in one.received + two.received)


async def test_webhook_validation_and_delete(bot: Bot, fake_telegram: FakeTelegram, receiver: Receiver) -> None:
    with pytest.raises(BadRequest, match="Bad webhook"):
        await bot.set_webhook("https://example.org/hook")
    with pytest.raises(BadRequest, match="Secret token contains unallowed characters"):
        await bot.set_webhook(receiver.url, secret_token="not allowed!")
    with pytest.raises(BadRequest, match="Invalid max_connections"):
        await bot.set_webhook(receiver.url, max_connections=101)
    assert (await bot.get_webhook_info()).url == ""

    await bot.set_webhook(receiver.url, allowed_updates=["callback_query"])
    assert (await bot.get_webhook_info()).allowed_updates == ("callback_query",)
    fake_telegram.user_sends_text("not asked for")
    menu = await bot.send_message(
        CHAT, "menu", reply_markup=InlineKeyboardMarkup.from_button(InlineKeyboardButton("Go", callback_data="go"))
    )
    fake_telegram.user_presses_button(menu.to_dict(), "go")
    await fake_telegram.webhook_done(1)
    assert [list(update)[1] for _, update in receiver.received] == ["callback_query"]

    await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""
    fake_telegram.user_sends_text("polled")
    fake_telegram.long_poll_cap = 0
    assert [u.message.text for u in await bot.get_updates()] == ["polled"]

    await bot.set_webhook(receiver.url, drop_pending_updates=True)
    assert fake_telegram.pending_updates == []


def test_chunked_request_body(fake_telegram: FakeTelegram) -> None:
    """The shared server base reads ``Transfer-Encoding: chunked`` bodies like any other."""
    connection = http.client.HTTPConnection(fake_telegram.host, timeout=5)
    body = iter([b"chat_id=1001&", b"text=in+two+chunks"])
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", f"/bot{FakeTelegram.TOKEN}/sendMessage", body, headers, encode_chunked=True)
    answer = json.loads(connection.getresponse().read())
    connection.close()
    assert answer["result"]["text"] == "in two chunks"


def test_user_parameters_are_checked(fake_telegram: FakeTelegram) -> None:
    with pytest.raises(TypeError, match="user_name"):
        fake_telegram.user_sends_text("hi", user_name="ada")  # type: ignore[call-arg]
    group = fake_telegram.user_sends_text("hi", chat_type="supergroup", user_id=5, username="ada", language_code=None)
    assert group["chat"] == {"id": FakeTelegram.DEFAULT_GROUP_ID, "type": "supergroup", "title": "aipbot test group"}
    assert group["from"] == {"id": 5, "is_bot": False, "first_name": "Ada", "username": "ada"}
