"""The console chat answers every line a user or a script can throw at it, and exits 0 at end of input.

The inputs are piped, as bytes, into a real ``python bot.py --console`` process.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples"
IMAGE = DATA / "text" / "en_line.png"
ANSWER = ("bot> ", "bot (edited)> ", "     ")  # a bot reply, or a console notice


def run_console(tmp_path: Path, data: bytes, config: str) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "config.yaml"
    path.write_text(config + f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(path), "--console"],
        input=data,
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"},
    )


def exchanges(stdout: str) -> list[tuple[str, list[str]]]:
    """``[(echoed input line, [answer lines])]`` in order (the banner before the first line is dropped)."""
    out: list[tuple[str, list[str]]] = []
    for line in stdout.split("\n"):
        if line.startswith("you> "):
            out.append((line[5:], []))
        elif out and line:
            out[-1][1].append(line)
    return out


def random_lines(seed: int, count: int) -> list[bytes]:
    """Lines of what a careless user, a broken script or a cat on the keyboard sends (no line breaks)."""
    rng = random.Random(seed)
    pieces = [b"/", b"//", b"~", b"~root", b"~nosuch", b".", b"..", b"../", b"./", b".jpg", b".png", b" ", b"\t"]
    pieces += [b"/ocr", b"/facematch", b"/help", b"/start", b"/cancel", b"/plugins", b"/OCR@bot", b"'", b'"', b"\\"]
    pieces += [b"0", b"1", b"2", b"99", b"-1", "图片".encode(), "é".encode(), b"\x00", b"\x1b[2J", b"\x7f", b"\x0c"]
    pieces += [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f", b"%s", b"{0}", b"{name}", b"${HOME}", b"*", b"?"]
    lines = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            line = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        elif kind < 0.8:
            line = bytes(rng.choice([b for b in range(256) if b not in b"\r\n"]) for _ in range(rng.randint(1, 80)))
        else:
            line = b"/" + rng.randbytes(rng.randint(1, 300)).replace(b"\n", b"/").replace(b"\r", b"~")
        lines.append(line)
    return lines


@pytest.mark.slow
def test_console_answers_every_odd_line_and_exits_0_at_end_of_input(tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    (tmp_path / "folder").mkdir()
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"\xff\xd8 not really a jpeg")
    locked.chmod(0)
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    odd = [
        b"/" + b"a" * 100_000,  # 100k characters starting with /
        b"/ocr " + b"x/" * 50_000,  # 100k characters of path
        b"~nosuchuser/pic.jpg",
        b"/ocr ~nosuchuser/pic.jpg",
        b"~root",
        b"~",
        b"/ocr ./folder/",
        b"/ocr '" + str(folder).encode() + b"'",  # a path with a space, quoted
        b"/ocr locked.jpg",  # unreadable (unless the tests run as root, who reads anything)
        b"/ocr /proc/self/mem",  # unreadable even for root: a read at offset 0 fails
        b"/ocr broken.jpg",
        b"/ocr pipe.png",  # a named pipe: opening it would block
        b"/ocr /dev/zero",
        b"/ocr a\x00b.jpg",
        b"/ocr " + b"n" * 300 + b".jpg",  # a file name too long
        b"/ocr " + b"d/" * 3000 + b"x.png",  # a path too long
        b"\xff\xfe/\x80abc\x1b[2J/",  # random bytes with / and invalid UTF-8
        b"/x\xff/y.png",
        b"\xc3\x28 / \xa0\xa1",
        b"",
        b"   \t ",
        b"42",  # a number, and no buttons to press
        b"9" * 5000,
        str(IMAGE).encode(),  # a photo without a command: the bot asks, with a button
        b"5",  # no such button
        b"0",
        b"9" * 400,
        b"/cancel",
        b"/ocr 'unclosed quote.jpg",
        b"/start x" + b"\xff" * 10,
        b"/help\r",  # a line from a file written on Windows
    ]
    lines = odd + random_lines(20261201, 200) + [b"/help"]
    result = run_console(tmp_path, b"\n".join(lines) + b"\n", "plugins:\n  ocr: {enabled: true, engine: local}\n")
    stderr = result.stderr.decode("utf-8", "replace")
    stdout = result.stdout.decode("utf-8")  # the console writes valid UTF-8, whatever it was sent
    assert result.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    talk = exchanges(stdout)
    assert len(talk) == len(lines), f"{len(talk)} echoed lines for {len(lines)} input lines"
    for (said, answer), sent in zip(talk, lines, strict=True):
        assert answer, f"no answer to {sent[:80]!r} (echoed as {said[:80]!r})"
        assert answer[0].startswith(ANSWER), f"{sent[:80]!r} answered {answer[0][:80]!r}"
    answers = {bytes(sent): answer for sent, (_, answer) in zip(lines, talk, strict=True)}
    assert answers[odd[0]] == ["     that line is too long (100001 characters; a message holds at most 4096)"]
    assert answers[b"~nosuchuser/pic.jpg"] == ["     no such file: ~nosuchuser/pic.jpg (there is no user 'nosuchuser')"]
    assert answers[b"/ocr ./folder/"] == ["     not a file: ./folder/ (a directory)"]
    assert answers[b"/ocr '" + str(folder).encode() + b"'"][0].endswith("a folder (a directory)")
    assert answers[b"/ocr /proc/self/mem"] == ["     cannot read /proc/self/mem: input/output error"]
    if os.geteuid() != 0:
        assert answers[b"/ocr locked.jpg"] == ["     cannot read locked.jpg: permission denied"]
    assert answers[b"/ocr broken.jpg"][0].startswith("     no such file: broken.jpg (a symbolic link")
    assert answers[b"/ocr pipe.png"] == ["     not a file: pipe.png (a device, pipe or socket)"]
    assert answers[b"/ocr a\x00b.jpg"][0].startswith("     no such file: a\\x00b.jpg")
    assert answers[b"/ocr " + b"n" * 300 + b".jpg"][0].endswith(": file name too long")
    assert (
        answers[b""]
        == answers[b"   \t "]
        == ["     (an empty line: type /help for the commands, or the path of an image)"]
    )
    assert answers[b"42"] == ["bot> Send me a photo, or a command. /help lists what I can do."]
    assert answers[b"5"] == ["     there is no button 5 (type 1)"]
    assert answers[b"9" * 400][0].startswith("     there is no button 999")
    assert "\ufffd" in talk[odd.index(b"\xff\xfe/\x80abc\x1b[2J/")][0]  # undecodable bytes shown as U+FFFD
    assert "\\x1b[2J" in talk[odd.index(b"\xff\xfe/\x80abc\x1b[2J/")][0]  # escape sequences shown, not obeyed
    assert talk[-1][1][0] == "bot> Commands:"
