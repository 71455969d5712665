"""`kill -9` with 20 users waiting: after the restart every user is answered, and exactly once.

A real ``bot.py`` process polls the fake Bot API. Its ``/work`` command (a tiny third-party plugin,
installed for the subprocess through an ``aipbot`` entry point) answers "working on it", sleeps, then
answers "done". The process is killed (SIGKILL: no shutdown code runs) while all 20 users wait for
"done" — their updates already confirmed to Telegram — and started again on the same database.
"""

import asyncio
import signal
import subprocess
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fakes.telegram import FakeTelegram
from tests.servers import bot_process

ROOT = Path(__file__).resolve().parent.parent
USERS = [2000 + i for i in range(20)]

PLUGIN = """
import asyncio

from core.contract.chat import Command
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl


@hookimpl
def aipbot_config_schema():
    return {"seconds": Field(float, default=1.0)}


@hookimpl
def aipbot_messages():
    return {"en": {"slowwork.help": "Work slowly"}, "zh": {"slowwork.help": "慢慢做"}}


@hookimpl
def aipbot_commands(config):
    async def work(ctx):
        await ctx.reply("working on it")
        await asyncio.sleep(config["seconds"])
        await ctx.reply("done")

    return [Command("work", "slowwork.help", work)]
"""


@pytest.fixture
def fake_telegram(monkeypatch):
    """The fake Bot API with a listen backlog for 20 bots' worth of connections at once: the standard
    library's 5 overflows on a loaded machine, and the bot's sends then fail with a reset connection
    (retrying sends is the sending side's job, not what this test is about)."""
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)
    with FakeTelegram() as fake:
        yield fake


def install_plugin(site: Path) -> None:
    """The plugin as an installed distribution (a module and its dist-info with the entry point)."""
    site.mkdir()
    (site / "aipbot_slowwork.py").write_text(PLUGIN)
    info = site / "aipbot_slowwork-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aipbot-slowwork\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aipbot]\nslowwork = aipbot_slowwork\n")


def start(
    fake, tmp_path: Path, seconds: float, log: str, *, telegram: str = "poll_timeout: 1", more: str = ""
) -> subprocess.Popen:
    """``bot.py`` on the fake with the plugin sleeping ``seconds``; its stderr goes to ``tmp_path / log``.
    ``telegram``: more lines of the ``telegram:`` section (YAML, one key a line); ``more``: more top-level YAML."""
    config = tmp_path / "config.yaml"
    extra = "".join(f"  {line}\n" for line in telegram.splitlines())
    config.write_text(
        f"telegram:\n  token: ${{TEST_BOT_TOKEN}}\n  base_url: {fake.base_url}\n  base_file_url: {fake.base_file_url}\n"
        + extra
        + more
        + f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\nplugins:\n  slowwork: {{seconds: {seconds}}}\n"
    )
    return bot_process(config, tmp_path, tmp_path / log, PYTHONPATH=str(tmp_path / "site"), TEST_BOT_TOKEN=fake.TOKEN)


def accepted(fake, text: str) -> dict[int, int]:
    """How many messages with ``text`` Telegram accepted, by chat."""
    counts: dict[int, int] = {}
    for call in fake.calls_of("sendMessage"):
        if not call.fault and call.text == text:
            counts[call.chat_id] = counts.get(call.chat_id, 0) + 1
    return counts


async def until(check, timeout: float, what: str, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"within {timeout} s: {what}; the bot logged:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.05)


async def test_after_kill_9_with_20_users_waiting_every_user_is_answered_exactly_once(fake_telegram, tmp_path):
    install_plugin(tmp_path / "site")
    log1, log2 = tmp_path / "bot1.log", tmp_path / "bot2.log"
    first = start(fake_telegram, tmp_path, 60, log1.name)  # killed long before it would answer "done"
    second = None
    try:
        await fake_telegram.wait_for("getUpdates", timeout=60)
        for user in USERS:
            fake_telegram.user_sends_text("/work", user_id=user)
        told = lambda: len(accepted(fake_telegram, "working on it")) == 20  # noqa: E731
        await until(told, 60, "20 users told 'working on it'", log1)
        await until(lambda: not fake_telegram.pending_updates, 10, "Telegram told the updates arrived", log1)
        await asyncio.sleep(0.3)  # the reply marks are written right after Telegram's answer
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert accepted(fake_telegram, "done") == {}

        second = start(fake_telegram, tmp_path, 0.2, log2.name)
        done = lambda: len(accepted(fake_telegram, "done")) == 20  # noqa: E731
        await until(done, 60, "20 users told 'done' after the restart", log2)
        await asyncio.sleep(1.0)  # anything sent twice would have been sent by now
        assert accepted(fake_telegram, "done") == {user: 1 for user in USERS}
        assert accepted(fake_telegram, "working on it") == {user: 1 for user in USERS}
        second.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, second.wait, 30)
        stderr = log2.read_text()
        assert code == 0, stderr
        assert "replaying 20 updates" in stderr
        assert "Traceback" not in stderr
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
