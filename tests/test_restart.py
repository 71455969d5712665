"""Conversations survive a restart of the bot process: a real ``bot.py`` on the fake Bot API, stopped and
started again on the same database between two steps of a command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples"


class BotProcess:
    """``python bot.py`` with a config written from ``config``; ``await start()``, ``await stop()``."""

    def __init__(self, fake_telegram, tmp_path: Path, config: dict) -> None:
        self.fake = fake_telegram
        self.tmp = tmp_path
        base = {
            **fake_telegram.config(token="${TEST_BOT_TOKEN}"),
            "storage": {"path": str(tmp_path / "aipbot.sqlite3")},
        }
        self.path = tmp_path / "config.yaml"
        self.path.write_text(yaml.safe_dump({**base, **config}, allow_unicode=True))
        self.proc: subprocess.Popen | None = None
        self.stderr = ""

    async def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TEST_BOT_TOKEN": self.fake.TOKEN,
            "NO_PROXY": "127.0.0.1,localhost",
            "HOME": str(self.tmp),
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), "--config", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.tmp,
        )
        await self.fake.wait_for("getUpdates", timeout=60)

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 60)
        self.stderr += self.proc.stderr.read() if self.proc.stderr else ""
        assert code == 0, self.stderr
        assert "Traceback" not in self.stderr, self.stderr

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def bot_process(fake_telegram, tmp_path):
    made: list[BotProcess] = []

    def make(config: dict) -> BotProcess:
        made.append(BotProcess(fake_telegram, tmp_path, config))
        return made[-1]

    yield make
    for process in made:
        process.kill()


async def two_steps_with_a_restart_between(fake_telegram, bot, first: list, then: str) -> tuple[str, str]:
    """Start the bot, do the ``first`` steps (texts or photo files, each answered), restart it, send the photo
    ``then``: the texts of the last answer before the restart and of the answer after it."""
    await bot.start()
    for step in first:
        if isinstance(step, Path):
            fake_telegram.user_sends_photo(step.read_bytes())
        else:
            fake_telegram.user_sends_text(step)
        last = await fake_telegram.bot_replied(timeout=120)
    await bot.stop()
    await bot.start()
    fake_telegram.user_sends_photo((DATA / then).read_bytes())
    answer = await fake_telegram.bot_replied(timeout=120)
    await bot.stop()
    return last.text, answer.text


async def test_ocr_then_a_restart_then_the_photo_gets_read(fake_telegram, bot_process):
    bot = bot_process({"plugins": {"ocr": {"engine": "local"}}})
    prompt, answer = await two_steps_with_a_restart_between(fake_telegram, bot, ["/ocr"], "text/en_line.png")
    expected = json.loads((DATA / "text" / "expected.json").read_text())["en_line.png"][0]
    assert "photo" in prompt
    assert answer.replace(" ", "") == expected.replace(" ", "")


async def test_facematch_first_photo_then_a_restart_then_the_second_photo_gets_compared(fake_telegram, bot_process):
    bot = bot_process({"plugins": {"facematch": {"engine": "local"}}})
    steps = ["/facematch", DATA / "faces" / "obama_1.jpg"]
    got_first, answer = await two_steps_with_a_restart_between(fake_telegram, bot, steps, "faces/obama_2.jpg")
    assert "Got the first photo" in got_first
    assert "likely the same person" in answer


async def test_the_webank_identity_question_then_a_restart_then_the_answer_is_read_checked_and_deleted(
    fake_telegram, fake_webank, bot_process, tmp_path
):
    from tests.test_realname_e2e import assert_nothing_personal_stored
    from tests.test_webank_e2e import ID_NUMBER, NAME, USER

    plugins = {"realname": {"provider": "webank", "poll_seconds": 3600}}
    bot = bot_process({**fake_webank.config(), "plugins": plugins})
    await bot.start()
    fake_telegram.user_sends_text("/verify")
    assert "18-digit ID number" in (await fake_telegram.bot_replied(USER, timeout=30)).text
    await bot.stop()
    await bot.start()
    answer = fake_telegram.user_sends_text(f"{NAME} {ID_NUMBER}")
    launched = await fake_telegram.bot_replied(USER, timeout=30)
    await bot.stop()
    assert launched.buttons and launched.buttons[0][0]["url"].startswith(fake_webank.endpoint)
    assert (USER, answer["message_id"]) in fake_telegram.deleted
    assert_nothing_personal_stored(tmp_path / "aipbot.sqlite3", NAME, ID_NUMBER)
    assert NAME not in bot.stderr and ID_NUMBER not in bot.stderr
