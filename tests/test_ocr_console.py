"""/ocr end to end through ``python bot.py --console`` (stdin lines in, stdout lines out), local engine.

One console process reads every test image, so the model loads once for the whole module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples"
TEXT = DATA / "text"
BAD = DATA / "bad"
EXPECTED: dict[str, list[str]] = json.loads((TEXT / "expected.json").read_text(encoding="utf-8"))

pytestmark = pytest.mark.slow


def squeeze(text: str) -> str:
    return "".join(text.split())


def exchanges(stdout: str) -> dict[str, str]:
    """What the bot answered to each input line: ``{input line: bot text}`` (prefixes stripped)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith("you> "):
            current = out.setdefault(line[5:], [])
        elif current is not None and line.startswith(("bot> ", "     ")):  # a reply, or its next line
            current.append(line[5:])
    return {key: "\n".join(value) for key, value in out.items()}


@pytest.fixture(scope="module")
def console_run(tmp_path_factory) -> dict[str, str]:
    """One console session: every text image, an album, and the bad inputs."""
    tmp = tmp_path_factory.mktemp("ocr-console")
    config = tmp / "config.yaml"
    config.write_text(
        f"plugins:\n  ocr: {{enabled: true, engine: local}}\nstorage: {{path: {tmp / 'db.sqlite3'}}}\n",
        encoding="utf-8",
    )
    lines = [f"/ocr {TEXT / name}" for name in sorted(EXPECTED)]
    lines.append(f"/ocr {TEXT / 'en_line.png'} {BAD / 'not_an_image.jpg'} {TEXT / 'tilted.jpg'}")
    lines += [f"/ocr {BAD / name}" for name in ("blank.png", "tiny.png", "truncated.jpg")]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(config), "--console"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)},
    )
    assert result.returncode == 0, result.stderr
    return exchanges(result.stdout)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_console_reads_every_text_image_in_reading_order(console_run, name):
    answer = console_run[f"/ocr {TEXT / name}"]
    flat = squeeze(answer)
    for word in " ".join(EXPECTED[name]).split():
        assert word in flat, f"{word!r} missing from {answer!r}"
    assert [squeeze(line) for line in answer.splitlines()] == [squeeze(line) for line in EXPECTED[name]]


def test_console_album_is_labelled_per_image(console_run):
    answer = console_run[f"/ocr {TEXT / 'en_line.png'} {BAD / 'not_an_image.jpg'} {TEXT / 'tilted.jpg'}"]
    sections = answer.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["Image 1:", "Image 2:", "Image 3:"]
    assert squeeze(sections[0]) == "Image1:" + squeeze(EXPECTED["en_line.png"][0])
    assert "not an image" in sections[1]
    assert squeeze(sections[2]) == "Image3:" + "".join(squeeze(line) for line in EXPECTED["tilted.jpg"])


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("blank.png", "couldn't find any text"),
        ("tiny.png", "too small (8×8 px)"),
        ("truncated.jpg", "damaged or incomplete"),
    ],
)
def test_console_bad_inputs_get_a_clear_message(console_run, name, says):
    assert says in console_run[f"/ocr {BAD / name}"]
