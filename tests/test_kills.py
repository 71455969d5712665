"""What ``kill -9`` must not cost: a real ``bot.py`` on the fake Bot API, killed (SIGKILL: no shutdown code runs) and
started again on the same database.

- an outbox message whose send was cut off by the kill arrives within 5 s of the restart (the dead process's
  lease is taken over at start, not after it lapses);
- updates in flight through three kills in a row are all answered (a kill from outside is not a poison update);
- an update that kills the bot every time it is handled is given up, and its user told so, while the others
  are answered.

The plugin (installed for the subprocess through an ``aipbot`` entry point): ``/remind`` puts a message in the
outbox; ``/work`` answers "working on it", sleeps ``seconds``, answers "done"; ``/crash`` kills its own process
(``os._exit``, as a segfault in an engine would) after "crashing".
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fakes.telegram import FakeTelegram
from tests.servers import bot_process
from tests.test_intake_process import accepted, until

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = """
import asyncio
import os

from core.contract.chat import Command, Reply
from core.runtime.config import Field
from core.contract.hookspecs import hookimpl


@hookimpl
def aipbot_config_schema():
    return {"seconds": Field(float, default=1.0)}


@hookimpl
def aipbot_messages():
    texts = {"killtest.remind": "Remind", "killtest.work": "Work", "killtest.crash": "Crash"}
    return {"en": texts, "zh": texts}


@hookimpl
def aipbot_commands(config, services):
    async def remind(ctx):
        await services.outbox.put(ctx.chat.id, Reply("your reminder"), key=f"remind:{ctx.chat.id}")

    async def work(ctx):
        await ctx.reply("working on it")
        await asyncio.sleep(config["seconds"])
        await ctx.reply("done")

    async def crash(ctx):
        os._exit(70)

    return [
        Command("remind", "killtest.remind", remind),
        Command("work", "killtest.work", work),
        Command("crash", "killtest.crash", crash),
    ]
"""


@pytest.fixture
def fake_telegram(monkeypatch):
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)
    with FakeTelegram() as fake:
        yield fake


def install_plugin(site: Path) -> None:
    site.mkdir(exist_ok=True)
    (site / "aipbot_killtest.py").write_text(PLUGIN)
    info = site / "aipbot_killtest-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aipbot-killtest\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aipbot]\nkilltest = aipbot_killtest\n")


class Bot:
    """Runs of ``bot.py`` on one database; ``start(seconds)`` one more run (its stderr in ``run<n>.log``)."""

    def __init__(self, fake: FakeTelegram, tmp_path: Path) -> None:
        self.fake, self.tmp = fake, tmp_path
        self.runs: list[subprocess.Popen] = []
        install_plugin(tmp_path / "site")

    @property
    def log(self) -> Path:
        return self.tmp / f"run{len(self.runs)}.log"

    def start(self, seconds: float) -> subprocess.Popen:
        config = self.tmp / "config.yaml"
        fake = self.fake
        config.write_text(
            f"telegram:\n  token: ${{TEST_BOT_TOKEN}}\n  base_url: {fake.base_url}\n"
            f"  base_file_url: {fake.base_file_url}\n  poll_timeout: 1\n"
            f"storage: {{path: {self.tmp / 'db.sqlite3'}}}\nplugins:\n  killtest: {{seconds: {seconds}}}\n"
        )
        log = self.tmp / f"run{len(self.runs) + 1}.log"
        proc = bot_process(config, self.tmp, log, PYTHONPATH=str(self.tmp / "site"), TEST_BOT_TOKEN=fake.TOKEN)
        self.runs.append(proc)
        return proc

    def kill(self) -> None:
        proc = self.runs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def polls(self, after: int, timeout: float = 60) -> float:
        """Wait for a ``getUpdates`` beyond the first ``after`` ones; the time it came."""
        await until(lambda: len(self.fake.calls_of("getUpdates")) > after, timeout, "the bot polls", self.log)
        return time.monotonic()

    async def stop(self) -> str:
        proc = self.runs[-1]
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        stderr = self.log.read_text()
        assert code == 0, stderr
        return stderr

    def close(self) -> None:
        for proc in self.runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def bot(fake_telegram, tmp_path):
    made = Bot(fake_telegram, tmp_path)
    yield made
    made.close()


async def test_an_outbox_message_cut_off_by_kill_9_arrives_within_5_s_of_the_restart(fake_telegram, bot):
    bot.start(0.1)
    await bot.polls(0)
    fake_telegram.fail("sendMessage", kind="stall", delay=60)  # under way when the process dies
    fake_telegram.user_sends_text("/remind", user_id=3001)
    await until(lambda: not fake_telegram.pending_updates, 30, "Telegram told the update arrived", bot.log)
    await asyncio.sleep(1.5)  # the update is handled: the outbox send hangs on Telegram's side
    bot.kill()
    assert accepted(fake_telegram, "your reminder") == {}

    connected = len(fake_telegram.calls_of("getMe"))
    bot.start(0.1)
    await until(lambda: len(fake_telegram.calls_of("getMe")) > connected, 60, "the bot connects", bot.log)
    started = time.monotonic()  # the restarted process reached Telegram (its imports and set-up are done)
    await until(lambda: accepted(fake_telegram, "your reminder"), 5, "the reminder arrived within 5 s", bot.log)
    took = time.monotonic() - started
    await asyncio.sleep(1.0)  # the replayed /remind puts it again: a known key, not sent twice
    assert accepted(fake_telegram, "your reminder") == {3001: 1}
    stderr = await bot.stop()
    assert "took over 1 messages whose sender died" in stderr
    assert "may be a duplicate" in stderr
    print(f"interrupted outbox message delivered {took:.2f} s after the restarted bot connected")


USERS = [4000 + i for i in range(10)]


async def test_10_updates_in_flight_through_3_kill_9s_in_a_row_are_all_answered_once(fake_telegram, bot):
    bot.start(60)  # each /work would take a minute: every run is killed while all of them are in flight
    await bot.polls(0)
    for user in USERS:
        fake_telegram.user_sends_text("/work", user_id=user)
    told = lambda: len(accepted(fake_telegram, "working on it")) == 10  # noqa: E731
    await until(told, 60, "10 users told 'working on it'", bot.log)
    await until(lambda: not fake_telegram.pending_updates, 10, "Telegram told the updates arrived", bot.log)
    await asyncio.sleep(0.3)  # the reply marks follow Telegram's answers
    bot.kill()
    for _ in range(2):  # two more runs killed while replaying (the second one replays one update at a time)
        bot.start(60)
        replaying = lambda: "replaying 10 updates" in bot.log.read_text()  # noqa: E731
        await until(replaying, 60, "the restarted bot replays", bot.log)
        await asyncio.sleep(0.5)  # the replay is under way
        bot.kill()
    assert accepted(fake_telegram, "done") == {}

    bot.start(0.2)
    done = lambda: len(accepted(fake_telegram, "done")) == 10  # noqa: E731
    await until(done, 60, "10 users told 'done' after the fourth start", bot.log)
    await asyncio.sleep(1.0)
    assert accepted(fake_telegram, "done") == dict.fromkeys(USERS, 1)
    assert accepted(fake_telegram, "working on it") == dict.fromkeys(USERS, 1)
    stderr = await bot.stop()
    assert "given up" not in stderr and "Traceback" not in stderr
    assert "replaying 10 updates one at a time" in stderr


async def test_an_update_that_kills_the_bot_each_time_is_given_up_with_a_word_to_its_user(fake_telegram, bot):
    """``/crash`` takes the process down each time it is handled; two other users' ``/work`` arrive with it. The
    test restarts the bot whenever it died (as systemd would) until everyone has an answer."""
    bot.start(0.5)
    await bot.polls(0)
    fake_telegram.user_sends_text("/work", user_id=5001)
    fake_telegram.user_sends_text("/crash", user_id=5002)
    fake_telegram.user_sends_text("/work", user_id=5003)
    given_up = "Sorry: your last message stopped me each time"
    answered = lambda: (  # noqa: E731
        len(accepted(fake_telegram, "done")) == 2
        and any(c.chat_id == 5002 and not c.fault and given_up in (c.text or "") for c in fake_telegram.calls)
    )
    deaths = 0
    deadline = time.monotonic() + 120
    while not answered():
        assert time.monotonic() < deadline, bot.log.read_text()[-3000:]
        if bot.runs[-1].poll() is not None:
            deaths += 1
            assert deaths <= 6, "still crashing after six restarts"
            bot.start(0.5)
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    assert accepted(fake_telegram, "done") == {5001: 1, 5003: 1}
    told = [c for c in fake_telegram.calls_of("sendMessage") if c.chat_id == 5002 and not c.fault]
    assert [c.text for c in told] == [told[0].text] and given_up in told[0].text
    stderr = await bot.stop()
    assert "given up (2 deaths while handled alone)" in stderr
    print(f"poison update given up after {deaths} deaths")
