"""Delivery rides out Telegram's errors: end to end over the fake Bot API with scripted faults, one test per
fault kind, each checking that the user gets the real (computed) answer; plus the adaptations (too long,
entities, photos Telegram would refuse, edits of messages that are gone) and the pieces they are made of."""

import asyncio
import logging
from pathlib import Path

import pytest

from core.runtime.config import validate
from core.sending.rules import photo_problem, refusal, split_text, utf16_len
from tests import delivery_plugin
from tests.delivery_plugin import COMPUTED, png
from tests.harness import merge

APOLOGY = "Sorry, something went wrong"


def delivery_config(fake, **overrides) -> dict:
    base = {
        **fake.config(request_timeout=0.5, send_backoff=0.05),  # a stalled request times out quickly
        "storage": {"path": ":memory:"},
        "plugins": {"calc": {}},
    }
    return validate(merge(base, overrides))


@pytest.fixture
def running(fake_telegram, start_bot):
    """``await running(**config_overrides)`` starts the bot with the calc plugin on the fake Bot API."""
    COMPUTED.clear()

    async def start(**overrides):
        return await start_bot(delivery_config(fake_telegram, **overrides), {"calc": delivery_plugin})

    return start


def sends(fake, method: str = "sendMessage", chat_id: int = 1001) -> list:
    return [c for c in fake.calls_of(method) if c.chat_id == chat_id]


async def ask_square(fake, n: int = 12) -> str:
    """The user asks /square n; the text of the (first successful) answer."""
    fake.user_sends_text(f"/square {n}")
    return (await fake.bot_replied(1001)).text


# ------------------------------------------------------------------ one test per fault kind


async def test_a_429_is_retried_after_the_retry_after_telegram_asked_for(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "429", retry_after=2)
    assert await ask_square(fake_telegram) == "12² = 144"
    refused, accepted = sends(fake_telegram)
    assert refused.fault == "429" and accepted.ok
    assert accepted.at - refused.at >= 2.0, "the retry came before the retry_after"
    assert COMPUTED == ["12² = 144"]


async def test_a_429_in_one_chat_does_not_hold_up_another(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "429", retry_after=2)
    fake_telegram.user_sends_text("/square 2", user_id=1)
    for _ in range(500):  # until the first answer has drawn its 429
        if fake_telegram.calls_of("sendMessage"):
            break
        await asyncio.sleep(0.01)
    fake_telegram.user_sends_text("/square 3", user_id=2)
    other = await fake_telegram.bot_replied(2)
    first = await fake_telegram.bot_replied(1)
    assert other.text == "3² = 9" and first.text == "2² = 4"
    assert other.at < first.at


async def test_two_429s_in_a_row_still_deliver_the_answer(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 2, "429", retry_after=1)
    assert await ask_square(fake_telegram) == "12² = 144"
    first, second, accepted = sends(fake_telegram)
    assert [first.fault, second.fault, accepted.fault] == ["429", "429", None]
    assert second.at - first.at >= 1.0 and accepted.at - second.at >= 1.0
    assert COMPUTED == ["12² = 144"]


@pytest.mark.parametrize("html", [True, False], ids=["nginx-502-page", "json-503"])
async def test_a_5xx_is_retried(fake_telegram, running, html):
    await running()
    fake_telegram.fail("sendMessage", 1, "5xx", status=502 if html else 503, html=html)
    assert await ask_square(fake_telegram) == "12² = 144"
    assert [c.fault for c in sends(fake_telegram)] == ["5xx", None]


async def test_a_dropped_connection_is_retried(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "drop")
    assert await ask_square(fake_telegram) == "12² = 144"
    assert [c.fault for c in sends(fake_telegram)] == ["drop", None]


async def test_a_stalled_request_times_out_and_is_retried(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "stall", delay=2)
    assert await ask_square(fake_telegram) == "12² = 144"
    for _ in range(100):  # the fake records the stalled call when it hangs up on it (2 s after it came)
        if len(sends(fake_telegram)) == 2:
            break
        await asyncio.sleep(0.05)
    stalled, accepted = sorted(sends(fake_telegram), key=lambda c: c.at)
    assert stalled.fault == "stall"
    assert accepted.at - stalled.at < 2, "the bot gave up waiting (request_timeout) before the stall ended"


async def test_message_is_too_long_is_sent_as_a_text_file(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "400", description="message is too long")
    fake_telegram.user_sends_text("/square 12")
    reply = await fake_telegram.bot_replied(1001)
    assert reply.method == "sendDocument"
    assert reply.file == ("text.txt", "12² = 144".encode())
    assert not [c for c in sends(fake_telegram) if c.ok]


async def test_cant_parse_entities_is_sent_again_as_plain_text(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "400", description="can't parse entities: Unsupported start tag")
    assert await ask_square(fake_telegram) == "12² = 144"
    refused, accepted = sends(fake_telegram)
    assert refused.fault == "400" and "parse_mode" not in accepted.params


async def test_the_apology_comes_only_when_retries_are_exhausted(fake_telegram, running, caplog):
    from core.infra.redact import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    await running(telegram={"send_retries": 2})
    fake_telegram.fail("sendMessage", 3, "5xx")  # one more than the retries
    with caplog.at_level(logging.INFO):
        fake_telegram.user_sends_text("/square 12")
        reply = await fake_telegram.bot_replied(1001)
    assert reply.text.startswith(APOLOGY)
    calls = sends(fake_telegram)
    assert [c.fault for c in calls] == ["5xx", "5xx", "5xx", None]
    assert calls[-1] is reply and reply.at > calls[2].at
    assert COMPUTED == ["12² = 144"]
    assert "sendMessage to chat 1001 failed after 3 attempts" in caplog.text
    assert "DeliveryFailed" in caplog.text and "Bad Gateway" in caplog.text
    assert fake_telegram.TOKEN not in caplog.text


async def test_a_refusal_that_cannot_be_adapted_is_not_retried(fake_telegram, running, caplog):
    await running()
    fake_telegram.fail("sendMessage", 1, "400", description="Bad Request: chat not found")
    with caplog.at_level(logging.WARNING):
        fake_telegram.user_sends_text("/square 12")
        reply = await fake_telegram.bot_replied(1001)
    assert reply.text.startswith(APOLOGY)
    assert [c.fault for c in sends(fake_telegram)] == ["400", None]  # no blind retry
    assert "sendMessage to chat 1001 refused: BadRequest: Chat not found" in caplog.text


async def test_a_429_longer_than_send_max_wait_is_not_waited_for(fake_telegram, running):
    await running(telegram={"send_max_wait": 1})
    fake_telegram.fail("sendMessage", 1, "429", retry_after=30)
    fake_telegram.user_sends_text("/square 3")
    reply = await fake_telegram.bot_replied(1001, timeout=5)
    assert reply.text.startswith(APOLOGY)


@pytest.mark.slow
async def test_an_ocr_result_survives_two_429s_and_a_502(fake_telegram, start_bot):
    image = (Path(__file__).resolve().parent.parent / "examples" / "text" / "en_line.png").read_bytes()
    config = delivery_config(fake_telegram, plugins={"ocr": {"engine": "local"}})
    await start_bot(config, {"calc": delivery_plugin})
    fake_telegram.fail("sendMessage", 2, "429", retry_after=1)
    fake_telegram.fail("sendMessage", 1, "5xx")
    fake_telegram.user_sends_photo(image, caption="/ocr")
    reply = await fake_telegram.bot_replied(1001, timeout=60)
    assert reply.text.replace(" ", "") == "HelloTSINGTAO2026"
    assert [c.fault for c in sends(fake_telegram)] == ["429", "429", "5xx", None]


@pytest.mark.slow
async def test_photo_downloads_ride_out_a_502_a_drop_and_a_429(fake_telegram, start_bot):
    """Issue 19: the file download is retried like every Bot API call; each user's download fails once."""
    image = (Path(__file__).resolve().parent.parent / "examples" / "text" / "en_line.png").read_bytes()
    config = delivery_config(fake_telegram, plugins={"ocr": {"engine": "local"}})
    await start_bot(config, {"calc": delivery_plugin})
    faults = [{"kind": "5xx", "status": 502}, {"kind": "drop"}, {"kind": "429", "retry_after": 1}]
    for user_id, fault in zip((2001, 2002, 2003), faults, strict=True):
        fake_telegram.fail("download", 1, **fault)
        fake_telegram.user_sends_photo(image, caption="/ocr", user_id=user_id)
        reply = await fake_telegram.bot_replied(user_id, timeout=60)
        assert reply.text.replace(" ", "") == "HelloTSINGTAO2026", fault
    kinds = [d.fault for d in fake_telegram.downloads]
    assert kinds == ["5xx", None, "drop", None, "429", None]
    refused, accepted = fake_telegram.downloads[4:]
    assert accepted.at - refused.at >= 1.0, "the download was tried again before the retry_after"


async def test_a_file_getfile_reports_over_the_limit_is_refused_before_any_download(fake_telegram, running):
    from core.contract.errors import BadImage

    transport = await running(telegram={"max_file_mb": 1})
    stored = fake_telegram._new_file(png(16, 16), "documents", "png", file_size=2 * 1024 * 1024)
    photo = transport.bot.photo_from_ref(stored["file_id"], {})  # the message named no size: getFile does
    with pytest.raises(BadImage) as refused:
        await photo.read()
    assert refused.value.key == "error.file_too_large"
    assert [c.ok for c in fake_telegram.calls_of("getFile")] == [True] and fake_telegram.downloads == []


# ------------------------------------------------------------------ everything else the bot sends


async def test_a_long_answer_in_two_parts_survives_faults(fake_telegram, running):
    await running()
    fake_telegram.fail("sendMessage", 1, "drop")
    fake_telegram.fail("sendMessage", 1, "5xx")
    fake_telegram.user_sends_text("/table 150")  # about 6,200 characters: two messages
    first = await fake_telegram.bot_replied(1001)
    second = await fake_telegram.bot_replied(1001)
    assert first.text + "\n" + second.text == COMPUTED[0]
    assert [c.fault for c in sends(fake_telegram)] == ["drop", "5xx", None, None]


async def test_a_photo_telegram_would_refuse_goes_as_a_document(fake_telegram, running):
    await running()
    fake_telegram.user_sends_text("/wide 10000 500")
    reply = await fake_telegram.bot_replied(1001)
    assert reply.method == "sendDocument" and reply.ok
    assert reply.file == ("image.png", png(10000, 500))
    assert reply.text == "10000x500"
    assert not fake_telegram.calls_of("sendPhoto")


@pytest.mark.parametrize(
    ("fault", "method"),
    [
        ({"kind": "400", "description": "PHOTO_INVALID_DIMENSIONS"}, "sendDocument"),  # refused anyway: a document
        ({"kind": "5xx"}, "sendPhoto"),  # retried
    ],
)
async def test_a_photo_refused_anyway_goes_as_a_document_and_one_after_a_5xx_is_retried(
    fake_telegram, running, fault, method
):
    await running()
    fake_telegram.fail("sendPhoto", 1, **fault)
    fake_telegram.user_sends_text("/pic")
    reply = await fake_telegram.bot_replied(1001)
    assert reply.method == method and reply.text == "a small picture"


async def test_an_edit_rides_out_a_fault_and_a_vanished_message_is_sent_anew(fake_telegram, running):
    await running()
    fake_telegram.fail("editMessageText", 1, "5xx")
    fake_telegram.user_sends_text("/status")
    await fake_telegram.bot_replied(1001)
    edit = await fake_telegram.wait_for("editMessageText", text="done: 42")
    assert edit.ok
    fake_telegram.fail("editMessageText", 1, "400", description="message to edit not found")
    fake_telegram.user_sends_text("/status")
    assert (await fake_telegram.bot_replied(1001)).text == "working…"
    assert (await fake_telegram.bot_replied(1001)).text == "done: 42"


async def test_message_is_not_modified_is_no_error(fake_telegram, running):
    transport = await running()
    message_id = await transport.bot.send(1001, delivery_plugin_reply("same"))
    await transport.bot.edit(1001, message_id, "same", [])  # the fake answers "message is not modified"
    assert fake_telegram.calls_of("editMessageText")[0].error.startswith("Bad Request: message is not modified")


async def test_the_command_menu_and_chat_actions_ride_out_faults(fake_telegram, start_bot):
    fake_telegram.fail("setMyCommands", 1, "5xx")
    fake_telegram.fail("sendChatAction", 1, "drop")
    transport = await start_bot(delivery_config(fake_telegram), {"calc": delivery_plugin})
    assert "square" in [c["command"] for c in fake_telegram.commands[""]]
    await transport.bot.chat_action(1001)
    assert [c.fault for c in fake_telegram.calls_of("sendChatAction")] == ["drop", None]


async def test_a_burst_to_one_chat_queues_and_all_of_it_arrives(fake_telegram, running):
    transport = await running()
    fake_telegram.limit_rate()  # 1 a second per chat, 3 in a row
    for n in range(6):
        await transport.bot.send(1001, delivery_plugin_reply(f"message {n}"))
    texts = [c.text for c in sends(fake_telegram) if c.ok]
    assert texts == [f"message {n}" for n in range(6)]


async def test_a_caption_over_1024_utf16_units_goes_after_the_photo_with_the_buttons(fake_telegram, running):
    from core.contract.chat import Button, Reply

    transport = await running()
    caption = "😀" * 600  # 600 characters, 1200 UTF-16 code units
    await transport.bot.send(1001, Reply(caption, [[Button("Go", url="https://example.org")]], photo=png(64, 48)))
    photo = await fake_telegram.bot_replied(1001)
    text = await fake_telegram.bot_replied(1001)
    assert photo.method == "sendPhoto" and photo.text is None and not photo.buttons
    assert text.text == caption and text.buttons[0][0]["text"] == "Go"


async def test_an_edit_too_long_for_one_message_edits_the_first_part_and_sends_the_rest(fake_telegram, running):
    transport = await running()
    message_id = await transport.bot.send(1001, delivery_plugin_reply("working…"))
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(60))  # about 5,300 characters
    await transport.bot.edit(1001, message_id, text, [])
    edit = await fake_telegram.wait_for("editMessageText")
    await fake_telegram.bot_replied(1001)  # the status line itself
    rest = await fake_telegram.bot_replied(1001)
    assert edit.text + "\n" + rest.text == text


def delivery_plugin_reply(text: str):
    from core.contract.chat import Reply

    return Reply(text)


# ------------------------------------------------------------------ the pieces


def test_split_text_counts_utf16_code_units_as_telegram_does():
    text = "😀" * 3000  # 6000 UTF-16 code units
    pieces = split_text(text)
    assert [utf16_len(p) for p in pieces] == [4096, 1904]
    assert "".join(pieces) == text


def test_photo_problem_names_what_telegram_would_refuse():
    assert photo_problem(png(640, 480)) == (None, "image.png")
    assert "width + height" in photo_problem(png(9000, 1500))[0]
    assert "ratio" in photo_problem(png(4200, 200))[0]
    assert photo_problem(b"x" * (11 * 1024 * 1024))[0].startswith("11.0 MB")
    assert photo_problem(b"not an image") == (None, "image.bin")


def test_refusals_are_told_apart():
    from telegram.error import BadRequest

    assert refusal(BadRequest("Message is too long")) == "too_long"
    assert refusal(BadRequest("Can't parse entities: can't find end of the entity")) == "entities"
    assert refusal(BadRequest("Message_too_long")) == "too_long"
    assert refusal(BadRequest("Message caption is too long")) == "caption_too_long"
    assert refusal(BadRequest("Message to edit not found")) == "gone"
    assert refusal(BadRequest("Message is not modified: specified new message content")) == "not_modified"
    assert refusal(BadRequest("Button_data_invalid")) == "buttons"
    assert refusal(BadRequest("Chat not found")) == "other"


# ------------------------------------------------------------------ the retries and the limiter on their own


async def _through(limiter, errors: list, data: dict | None = None, endpoint: str = "sendMessage"):
    """Run one request through ``limiter`` whose callback raises ``errors`` in turn, then answers ``True``;
    returns (result or exception, the data of each attempt)."""
    data = {"chat_id": 5} if data is None else data
    seen: list[dict] = []

    async def callback(endpoint_, data_):
        seen.append(dict(data_))
        if errors:
            raise errors.pop(0)
        return True

    try:
        result = await limiter.process_request(callback, (endpoint, data), {}, endpoint, data, None)
    except Exception as err:  # the test looks at it
        result = err
    return result, seen


async def _retried(sender, errors: list, data: dict | None = None, endpoint: str = "sendMessage"):
    """The same through the sender's retries, as for a call that passes no rate limiter (a file download)."""
    data = {"chat_id": 5} if data is None else data
    seen: list[dict] = []

    async def call(chat):
        seen.append({**data, "chat_id": chat})
        if errors:
            raise errors.pop(0)
        return True

    try:
        result = await sender.retrying(endpoint, call, chat=data["chat_id"], paced=False)
    except Exception as err:  # the test looks at it
        result = err
    return result, seen


async def test_the_sender_retries_only_what_may_work_next_time():
    from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

    from core.sending.sender import Sender

    sender = Sender(None, None, retries=3, backoff=0, max_wait=5)
    result, seen = await _retried(sender, [NetworkError("Bad Gateway"), TimedOut(), NetworkError("x")])
    assert result is True and len(seen) == 4
    for final in (
        BadRequest("Chat not found"),
        Forbidden("bot was blocked by the user"),
        NetworkError("Request Entity Too Large"),
    ):
        result, seen = await _retried(sender, [final])
        assert result is final and len(seen) == 1, final
    result, seen = await _retried(sender, [RetryAfter(3600)])  # over send_max_wait: not waited for
    assert isinstance(result, RetryAfter) and len(seen) == 1
    result, seen = await _retried(sender, [ChatMigrated(-1009)], {"chat_id": -5})
    assert result is True and [d["chat_id"] for d in seen] == [-5, -1009]
    result, seen = await _retried(sender, [NetworkError("x")] * 4)  # one more than the retries
    assert isinstance(result, NetworkError) and len(seen) == 4


async def test_the_limiter_rides_429s_and_leaves_every_other_error_to_the_sender():
    """python-telegram-bot's BaseRateLimiter contract: retry after a RetryAfter, handle no other exception."""
    from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TimedOut

    from core.sending.pacer import SendLimiter

    limiter = SendLimiter(retries=3, max_wait=5, overall=0, per_chat=0, per_group=0)  # no pacing here
    result, seen = await _through(limiter, [RetryAfter(0), RetryAfter(0)])
    assert result is True and len(seen) == 3
    for other in (NetworkError("Bad Gateway"), TimedOut(), BadRequest("Chat not found"), ChatMigrated(-1009)):
        result, seen = await _through(limiter, [other])
        assert result is other and len(seen) == 1, other
    result, seen = await _through(limiter, [RetryAfter(3600)])  # over send_max_wait: not waited for
    assert isinstance(result, RetryAfter) and len(seen) == 1
    result, seen = await _through(limiter, [RetryAfter(0)] * 4)  # one more than the retries
    assert isinstance(result, RetryAfter) and len(seen) == 4
    await limiter.shutdown()


def test_the_delivery_settings_are_validated_with_their_defaults():
    from core.runtime.config import ConfigError

    telegram = validate({})["telegram"]
    assert (telegram["send_retries"], telegram["send_backoff"], telegram["send_max_wait"]) == (5, 0.5, 60)
    assert (telegram["rate_overall"], telegram["rate_per_chat"], telegram["chat_burst"]) == (30, 1, 3)
    assert (telegram["rate_per_group"], telegram["request_timeout"]) == (20, 10)
    with pytest.raises(ConfigError, match=r"telegram.send_retries: must be at least 0"):
        validate({"telegram": {"send_retries": -1}})
    with pytest.raises(ConfigError, match=r"telegram.rate_per_chat: must be a number"):
        validate({"telegram": {"rate_per_chat": "fast"}})
