"""`kill -9` in webhook mode: a real ``bot.py`` behind the fake Bot API, which POSTs updates to the bot's web server.

Five users send ``/work`` (the slow plugin of ``tests/test_intake_process.py``: "working on it", a sleep, "done");
every delivery is acknowledged with 200 — so Telegram will never send those updates again — and the process is
killed (SIGKILL) while all five wait for "done". Started again on the same database, it answers each user once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx

from core.telegram.webhook import derive_secret
from tests.servers import free_port
from tests.test_intake_process import accepted, install_plugin, until
from tests.test_intake_process import start as start_polling_bot

USERS = [3000 + i for i in range(5)]


def start(fake, tmp_path: Path, port: int, seconds: float, log: str) -> subprocess.Popen:
    """``bot.py`` in webhook mode on ``port`` with the plugin sleeping ``seconds``; stderr to ``tmp_path / log``."""
    server = f'server: {{listen: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}", ready_cache: 0}}\n'
    telegram = "mode: webhook\nwebhook_source_networks: [127.0.0.1/32]"
    return start_polling_bot(fake, tmp_path, seconds, log, telegram=telegram, more=server)


async def test_after_kill_9_every_update_acknowledged_by_the_webhook_is_answered_once(fake_telegram, tmp_path):
    install_plugin(tmp_path / "site")
    port = free_port()
    log1, log2 = tmp_path / "bot1.log", tmp_path / "bot2.log"
    first = start(fake_telegram, tmp_path, port, 60, log1.name)  # killed long before it would answer "done"
    second = None
    try:
        await fake_telegram.wait_for("setWebhook", timeout=60)
        for user in USERS:
            fake_telegram.user_sends_text("/work", user_id=user)
        deliveries = await fake_telegram.webhook_done(len(USERS), timeout=60)
        assert [d.status for d in deliveries] == [200] * len(USERS)  # acknowledged: never sent again
        told = lambda: len(accepted(fake_telegram, "working on it")) == len(USERS)  # noqa: E731
        await until(told, 60, "every user told 'working on it'", log1)
        await asyncio.sleep(0.3)  # the reply marks are written right after Telegram's answer
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert accepted(fake_telegram, "done") == {}
        assert not fake_telegram.pending_updates

        second = start(fake_telegram, tmp_path, port, 0.2, log2.name)
        done = lambda: len(accepted(fake_telegram, "done")) == len(USERS)  # noqa: E731
        await until(done, 60, "every user told 'done' after the restart", log2)
        await asyncio.sleep(1.0)  # anything sent twice would have been sent by now
        assert accepted(fake_telegram, "done") == dict.fromkeys(USERS, 1)
        assert accepted(fake_telegram, "working on it") == dict.fromkeys(USERS, 1)
        assert len(fake_telegram.deliveries) == len(USERS)  # from the journal, not from redeliveries
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["webhook"] == "ok", ready.text
        second.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, second.wait, 30)
        stderr = log2.read_text()
        assert code == 0, stderr
        assert f"replaying {len(USERS)} updates" in stderr
        assert "Traceback" not in stderr
        for text in (log1.read_text(), stderr):
            assert fake_telegram.TOKEN not in text and derive_secret(fake_telegram.TOKEN) not in text
        assert fake_telegram.webhook is not None  # left set at stop (another process may serve it)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
