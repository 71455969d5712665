"""`python bot.py` as an admin runs it: polls the (fake) Bot API, answers, and stops cleanly on SIGTERM."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def test_the_bot_process_answers_on_telegram_and_stops_cleanly_on_sigterm(fake_telegram, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "telegram:\n"
        "  token: ${TEST_BOT_TOKEN}\n"
        f"  base_url: {fake_telegram.base_url}\n"
        f"  base_file_url: {fake_telegram.base_file_url}\n"
        "  poll_timeout: 1\n"
        f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\n"
        "plugins: {}\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TEST_BOT_TOKEN": fake_telegram.TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        await fake_telegram.wait_for("getUpdates", timeout=60)
        fake_telegram.user_sends_text("/help")
        reply = await fake_telegram.bot_replied(timeout=30)
        assert reply.text.startswith("Commands:")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        _, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, stderr
    assert "connected to Telegram as @" in stderr
    assert fake_telegram.TOKEN not in stderr
    assert "Traceback" not in stderr
