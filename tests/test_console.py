"""The console chat, driven through stdin/stdout as a script would."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples"


def console(tmp_path: Path, lines: str, config: str = "plugins: {}\n", *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(config + f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(path), *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def test_without_a_token_the_bot_starts_the_console_and_says_so(tmp_path):
    result = console(tmp_path, "/help\n")
    assert result.returncode == 0
    assert "No Telegram token configured (telegram.token): starting the console chat." in result.stderr
    assert "you> /help" in result.stdout
    assert "bot> Commands:" in result.stdout


def test_console_answers_every_line_and_exits_at_end_of_input(tmp_path):
    result = console(tmp_path, "/start\nhello\n/nope\n/cancel\n", "plugins: {}\n", "--console")
    assert result.returncode == 0
    out = result.stdout
    assert "Hello" in out
    assert "Send me a photo, or a command." in out
    assert "I don't know /nope." in out
    assert "There was nothing to cancel." in out


def test_console_reports_a_missing_image_file(tmp_path):
    result = console(tmp_path, "/help missing.png\n", "plugins: {}\n", "--console")
    assert "no such file: missing.png" in result.stdout


def test_console_language_follows_the_configured_default(tmp_path):
    result = console(tmp_path, "/help\n", "language: {default: zh}\nplugins: {}\n", "--console")
    assert "命令：" in result.stdout
