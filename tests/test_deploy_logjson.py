"""``logging.format: json``: one JSON object per line, with the update being handled, redacted as text logs are.

The bot runs on the real python-telegram-bot stack against the fake Bot API, with the logging bot.py sets up
(``setup_logging``) writing JSON lines, and a plain-text handler beside it receiving the same records: every
JSON line must say what its text line says, and neither may show a secret.
"""

import io
import json
import logging
import re
import sys

import pytest

from bot import setup_logging
from core.contract.chat import Command, Context
from core.contract.hookspecs import hookimpl
from core.infra import logjson, redact
from core.runtime.config import validate
from tests import probe_plugin
from tests.harness import merge

USER = 4242
SECRET = "Sx9-registered-secret-value"


def in_a_thread(note: str) -> str:
    """(an engine thread) logs with the secret in it, as a careless library might."""
    logging.getLogger("aipbot.test.engine").warning("engine says %s with %s and access_token=abc123", note, SECRET)
    return note


class Noisy:
    """A plugin whose command logs in the loop and in an engine thread."""

    @hookimpl
    def aipbot_messages(self):
        return {"en": {"noisy.help": "Log things"}, "zh": {"noisy.help": "写日志"}}

    @hookimpl
    def aipbot_commands(self, config):
        return [Command("noisy", "noisy.help", self.noisy)]

    async def noisy(self, ctx: Context) -> None:
        logging.getLogger("aipbot.test.plugin").info("noisy runs for chat %s", ctx.chat.id)
        await ctx.reply(await ctx.run_cpu(in_a_thread, "hello"))


@pytest.fixture
def logs(monkeypatch):
    """(json, text): what bot.py's JSON handler wrote, and a text handler's lines for the same records."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    quieted = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "urllib3", "uvicorn", "telegram")}
    json_out, text_out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", json_out)
    setup_logging("DEBUG", "json")
    text = logging.StreamHandler(text_out)
    text.setFormatter(logjson.formatter("text"))
    root.addHandler(text)
    redact.install(root)
    redact.register_secret(SECRET)
    try:
        yield json_out, text_out
    finally:  # as it was: setup_logging also sets the levels of noisy libraries, which later tests read
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)


async def test_json_lines_name_the_update_and_are_redacted_as_text_lines(fake_telegram, start_bot, logs):
    json_out, text_out = logs
    config = validate(
        merge(
            fake_telegram.config(),
            {"storage": {"path": ":memory:"}, "plugins": {"probe": {}, "noisy": {}}},
        )
    )
    await start_bot(config, {"probe": probe_plugin, "noisy": Noisy()})
    fake_telegram.user_sends_text("/noisy", user_id=USER)
    assert (await fake_telegram.bot_replied()).text == "hello"
    fake_telegram.user_sends_text("/boom", user_id=USER)  # raises with access_token=SHOULD-NOT-LEAK in it
    assert (await fake_telegram.bot_replied()).text.startswith("Sorry, something went wrong")
    await start_bot.stop()

    lines = json_out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)

    def one(logger: str, start: str) -> dict:
        found = [r for r in records if r["logger"] == logger and r["message"].startswith(start)]
        assert len(found) == 1, (logger, start, records)
        return found[0]

    in_loop = one("aipbot.test.plugin", "noisy runs")
    in_thread = one("aipbot.test.engine", "engine says hello")
    crash = one("core.pipeline.router", "unhandled error while handling an update")
    assert in_loop["level"] == "INFO" and in_thread["level"] == "WARNING" and crash["level"] == "ERROR"
    for record in (in_loop, in_thread):  # the plugin's lines, in the loop and in the engine thread
        assert record["chat"] == USER and record["plugin"] == "noisy" and record["command"] == "noisy"
        assert isinstance(record["update_id"], int)
    assert in_loop["update_id"] == in_thread["update_id"]
    assert crash["chat"] == USER and crash["update_id"] == in_loop["update_id"] + 1
    assert "plugin" not in crash  # logged by the router after the plugin's handler returned
    assert "RuntimeError: kaboom" in crash["exception"]
    outside = [
        r for r in records if r["logger"] == "telegram.ext.Application" or "connected to Telegram" in r["message"]
    ]
    assert outside and all("update_id" not in r for r in outside)  # start-up lines belong to no update

    # redaction: the same masks as the text lines, and no secret anywhere
    assert in_thread["message"] == "engine says hello with *** and access_token=***"
    assert "access_token=***" in crash["exception"]
    text = text_out.getvalue()
    for record in records:
        assert f"{record['level']} {record['logger']}: {record['message']}" in text
    for output in (json_out.getvalue(), text):
        for secret in (SECRET, "abc123", "SHOULD-NOT-LEAK", fake_telegram.TOKEN):
            assert secret not in output


def test_the_context_is_left_at_the_end_of_the_handling():
    import asyncio

    seen = []

    @logjson.log_context(lambda chat: {"chat": chat, "update_id": "17", "plugin": None})
    async def handle(chat: str) -> None:
        seen.append(logjson.current())

    asyncio.run(handle("-100200"))
    assert seen == [{"chat": -100200, "update_id": 17}]
    assert logjson.current() == {}


def test_text_is_the_default_format():
    assert validate({})["logging"]["format"] == "text"
    with pytest.raises(Exception, match=r"logging.format: must be one of text, json"):
        validate({"logging": {"format": "xml"}})
