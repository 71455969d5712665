"""/facematch through the real router, config and plugin manager (tests/harness.py), local engine."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import logging
import os
import re
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import plugins.facematch as facematch
from core.contract.chat import Photo
from core.pipeline.conversation import Conversations
from core.runtime.config import ConfigError
from plugins.facematch.engines import LocalFaceEngine
from tests.harness import Harness

DATA = Path(__file__).resolve().parents[1] / "examples"
FACES = DATA / "faces"
LOCAL = {"plugins": {"facematch": {"enabled": True, "engine": "local"}}}


def photo(name: str) -> bytes:
    folder = FACES if (FACES / name).exists() else DATA / "bad"
    return (folder / name).read_bytes()


@pytest.fixture(scope="session", autouse=True)
def models() -> None:
    """Load the dlib models once for the session (the plugin's start-up warms the same cache)."""
    LocalFaceEngine().load()


def holding() -> list[Photo]:
    """First photos still held in memory by a conversation (alive, not expired and not wiped)."""
    gc.collect()
    tables = [obj for obj in gc.get_objects() if isinstance(obj, Conversations)]
    for table in tables:
        table.held.expire()
    return [photo for table in tables for photo in table.held.values() if not photo.wiped]


@pytest.fixture(autouse=True)
def no_first_photo_left():
    """Every test ends with no first photo in memory (dropped on use, /cancel, expiry, shutdown)."""
    yield
    assert not holding()


def assert_picture(reply) -> None:
    assert reply.photo is not None
    with Image.open(io.BytesIO(reply.photo)) as im:
        assert im.format == "JPEG" and im.width > 600


# ------------------------------------------------------------------------------------------ albums
@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ("obama_1.jpg", "obama_2.jpg", "likely the same person"),
        ("biden_1.jpg", "biden_2.jpg", "likely the same person"),
        ("obama_1.jpg", "biden_1.jpg", "likely different people"),
        ("biden_2.jpg", "obama_2.jpg", "likely different people"),
    ],
)
async def test_album_of_two(a, b, verdict):
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo(a), photo(b)])
    assert len(replies) == 1
    text = replies[0].text
    assert verdict in text
    assert "Compared on this server" in text and "from 80 up" in text
    score = float(re.search(r"Similarity: ([\d.]+) / 100", text).group(1))
    assert (score >= 80) == (verdict == "likely the same person")
    assert_picture(replies[0])


async def test_album_of_three_uses_the_first_two():
    async with Harness(LOCAL) as bot:
        replies = await bot.send(
            "/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg"), photo("biden_1.jpg")]
        )
    assert "I'll use the first 2" in replies[0].text
    assert "likely the same person" in replies[-1].text


async def test_several_faces_says_the_largest_was_used():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_2.jpg"), photo("two_people.jpg")])
    assert "The second photo shows 2 faces; I compared the largest one." in replies[0].text
    assert_picture(replies[0])


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("no_face.png", "obama_1.jpg", "couldn't find a face in the first photo"),
        ("obama_1.jpg", "no_face.png", "couldn't find a face in the second photo"),
        ("no_face.png", "blank.png", "couldn't find a face in either photo"),
    ],
)
async def test_no_face_names_the_photo(a, b, message):
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo(a), photo(b)])
    assert len(replies) == 1 and message in replies[0].text
    assert replies[0].photo is None


async def test_bad_image_names_the_photo():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("truncated.jpg")])
        assert replies[0].text.startswith("Second photo: ") and "damaged or incomplete" in replies[0].text
        replies = await bot.send("/facematch", photos=[photo("not_an_image.jpg"), photo("obama_1.jpg")])
        assert replies[0].text.startswith("First photo: ")


async def test_chinese_user_gets_chinese_answer():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")], language="zh")
    assert "很可能是同一个人" in replies[0].text and "相似度" in replies[0].text


# ------------------------------------------------------------------------------------------ one after another
async def test_command_then_one_photo_then_another():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch")
        assert "Send me two photos" in replies[0].text
        replies = await bot.send(photos=[photo("biden_1.jpg")])
        assert "Got the first photo" in replies[0].text and "5 minutes" in replies[0].text
        assert len(holding()) == 1
        replies = await bot.send(photos=[photo("biden_2.jpg")])
        assert "likely the same person" in replies[0].text
        assert_picture(replies[0])
        assert not holding()  # used, then dropped
        # the command is no longer pending: the next photo is not a third face
        replies = await bot.send(photos=[photo("obama_1.jpg")])
        assert "Got the first photo" not in replies[0].text


async def test_caption_command_with_one_photo_then_another():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        assert "Got the first photo" in replies[0].text
        replies = await bot.send(photos=[photo("biden_2.jpg")])
        assert "likely different people" in replies[0].text


async def test_pairs_of_different_users_do_not_mix():
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")], user_id=1)
        await bot.send("/facematch", photos=[photo("biden_1.jpg")], user_id=2)
        one = await bot.send(photos=[photo("obama_2.jpg")], user_id=1)
        two = await bot.send(photos=[photo("biden_2.jpg")], user_id=2)
    assert "likely the same person" in one[0].text
    assert "likely the same person" in two[0].text


async def test_first_photo_without_a_face_is_asked_for_again():
    async with Harness(LOCAL) as bot:
        replies = await bot.send("/facematch", photos=[photo("no_face.png")])
        assert "as the first photo" in replies[0].text
        replies = await bot.send(photos=[photo("obama_1.jpg")])
        assert "Got the first photo" in replies[0].text
        replies = await bot.send(photos=[photo("blank.png")])
        assert "send another second photo" in replies[0].text  # the first one is kept
        replies = await bot.send(photos=[photo("truncated.jpg")])
        assert replies[0].text.startswith("Second photo: ")  # still kept
        replies = await bot.send(photos=[photo("obama_2.jpg")])
        assert "likely the same person" in replies[0].text


async def test_cancel_drops_the_first_photo():
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        assert len(holding()) == 1
        replies = await bot.send("/cancel")
        assert "Cancelled" in replies[0].text
        assert not holding()  # nothing holds the photo any more


async def test_cancel_forgets_the_pending_pair():
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        await bot.send("/cancel")
        replies = await bot.send(photos=[photo("obama_2.jpg")])
        assert not any("Similarity" in r.text for r in replies)


@pytest.fixture
def slow_check(monkeypatch):
    """Hold every photo check until the test releases it: ``(started, release)`` events."""
    started, release = asyncio.Event(), asyncio.Event()
    read_side = facematch.read_side

    async def held(*args):
        started.set()
        await release.wait()
        return await read_side(*args)

    monkeypatch.setattr(facematch, "read_side", held)
    return started, release


def texts(bot: Harness) -> list[str]:
    return [reply.text for _, reply in bot.transport.sent]


async def test_cancel_while_the_first_photo_is_checked_says_cancelled_and_the_photo_is_not_kept(slow_check):
    started, release = slow_check
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch")
        checking = asyncio.create_task(bot.send(photos=[photo("obama_1.jpg")]))
        await started.wait()
        (cancelled,) = await bot.send("/cancel")
        release.set()
        await checking
        assert cancelled.text == "Cancelled. I'm not waiting for anything now."
        assert not holding()
        assert not any("Got the first photo" in text for text in texts(bot))
        replies = await bot.send(photos=[photo("obama_2.jpg")])  # not the second of a pair any more
        assert replies[0].text == "What should I do with this photo?"


async def test_a_second_photo_sent_while_the_first_is_checked_is_asked_for_again(slow_check):
    started, release = slow_check
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch")
        checking = asyncio.create_task(bot.send(photos=[photo("obama_1.jpg")]))
        await started.wait()
        (early,) = await bot.send(photos=[photo("obama_2.jpg")])
        release.set()
        await checking
        assert early.text == "I'm still checking your first photo. Please send this one again once I have answered."
        assert "Got the first photo" in texts(bot)[-1]
        replies = await bot.send(photos=[photo("obama_2.jpg")])
        assert "likely the same person" in replies[0].text


async def test_the_plugin_itself_holds_the_first_photo_only_through_the_conversation():
    """The plugin object keeps no photo of its own: when the conversation lets go, nothing holds it."""
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        (first,) = holding()
        plugin = bot.app.plugins.pm.get_plugin("facematch")
        assert first not in gc.get_referents(*vars(plugin).values())
        await bot.app.services.conversations.drop(1, 1)
        assert not holding() and first.wiped


async def test_first_photo_is_dropped_when_the_pending_window_ends():
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        assert len(holding()) == 1
        state = bot.app.services.state
        now = state.clock()
        state.clock = lambda: now + 5 * 60 + 1  # the window (pending_minutes) ends
        assert not holding()
        replies = await bot.send(photos=[photo("obama_2.jpg")])  # not the second of a pair any more
        assert replies[0].text == "What should I do with this photo?"


async def test_shutdown_drops_waiting_first_photos():
    bot = Harness(LOCAL)
    async with bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg")])
        assert len(holding()) == 1
    assert not holding()


# ------------------------------------------------------------------------------------------ config and start-up
def test_config_defaults_and_errors():
    bot = Harness(LOCAL)
    section = bot.app.config["plugins"]["facematch"]
    assert section["engine"] == "local" and section["threshold"] == 80.0
    assert (section["face_type"], section["quality_control"], section["liveness_control"]) == ("LIVE", "NONE", "NONE")
    with pytest.raises(ConfigError, match=r"plugins\.facematch\.engine"):
        Harness({"plugins": {"facematch": {"enabled": True, "engine": "cloud"}}})
    with pytest.raises(ConfigError, match=r"plugins\.facematch\.threshold"):
        Harness({"plugins": {"facematch": {"enabled": True, "threshold": 120}}})


async def test_threshold_is_configurable():
    strict = {"plugins": {"facematch": {"enabled": True, "engine": "local", "threshold": 95}}}
    async with Harness(strict) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert "likely different people" in replies[0].text and "from 95 up" in replies[0].text


def test_startup_returns_before_the_models_are_warm(monkeypatch):
    release = threading.Event()
    warmed = threading.Event()

    def slow_warm() -> None:
        release.wait(30)
        warmed.set()

    plugin = facematch.Plugin()
    monkeypatch.setattr(plugin.engine, "warm", slow_warm)
    plugin.aipbot_startup(SimpleNamespace(handles_updates=True))  # must not wait for slow_warm
    assert not warmed.is_set()
    release.set()
    assert warmed.wait(30)


async def test_dlib_runs_only_in_the_engine_worker_threads(monkeypatch):
    threads: list[str] = []
    detect, describe = LocalFaceEngine.detect, LocalFaceEngine.describe

    def spy_detect(self, image):
        threads.append(threading.current_thread().name)
        return detect(self, image)

    def spy_describe(self, image, box):
        threads.append(threading.current_thread().name)
        return describe(self, image, box)

    monkeypatch.setattr(LocalFaceEngine, "detect", spy_detect)
    monkeypatch.setattr(LocalFaceEngine, "describe", spy_describe)
    async with Harness(LOCAL) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert len(threads) == 4
    assert all(name.startswith("aipbot-cpu") for name in threads), threads


# ------------------------------------------------------------------------------------------ privacy
_recording: list[tuple[str, object]] | None = None
_OTHER_WRITES = ("tempfile.mkstemp", "tempfile.mkdtemp", "os.rename", "shutil.copyfile", "sqlite3.connect")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if _recording is None:
        return
    if event == "open":
        path, mode, flags = (*args, None, None)[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing:
            _recording.append((event, path))
    elif event in _OTHER_WRITES and args and args[0] != ":memory:":
        _recording.append((event, args[0]))


@pytest.fixture
def disk_writes():
    """Every file the process opens for writing (any thread, any API that goes through open/os.open)."""
    global _recording
    if not getattr(sys, "_facematch_audit", False):
        sys.addaudithook(_audit)  # cannot be removed: it records only while a test asks
        sys._facematch_audit = True
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None


def test_disk_write_recorder_sees_pillow_and_tempfile_writes(disk_writes, tmp_path):
    """The recorder is not blind: Pillow saving to a path and a temp file both show up."""
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.write(b"x")
    assert any(str(tmp_path / "x.jpg") == str(path) for _, path in disk_writes)
    assert any(event == "tempfile.mkstemp" or "tmp" in str(path) for event, path in disk_writes[1:])


async def test_no_image_bytes_reach_the_disk_or_the_log(disk_writes, caplog):
    caplog.set_level(logging.DEBUG)  # everything any logger says, at every level
    inputs = [photo(n) for n in ("obama_1.jpg", "obama_2.jpg", "biden_1.jpg", "no_face.png", "truncated.jpg")]
    async with Harness(LOCAL) as bot:
        sent = []
        sent += await bot.send("/facematch", photos=[inputs[0], inputs[1]])
        sent += await bot.send("/facematch", photos=[inputs[2]])
        sent += await bot.send(photos=[inputs[3]])
        sent += await bot.send(photos=[inputs[1]])
        sent += await bot.send("/facematch", photos=[inputs[4], inputs[0]])
        sent += await bot.send("/facematch", photos=[inputs[0]])
        sent += await bot.send("/cancel")
    assert sum(r.photo is not None for r in sent) == 2  # the flows ran and drew their pictures
    assert disk_writes == []
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "facematch: engine=local" in logged  # the log was captured
    outputs = [r.photo for r in sent if r.photo]
    for data in inputs + outputs:
        assert base64.b64encode(data)[:40].decode() not in logged
        assert repr(data[:12])[2:-1] not in logged
    assert not re.search(r"[A-Za-z0-9+/]{100,}", logged)  # no base64 of anything
    assert not re.search(r"(\\x[0-9a-f]{2}){4}", logged)  # no bytes reprs
    assert not re.search(r"(-?0\.\d{3,}[,\s]+){8}", logged)  # no descriptor (128 small floats)


# ------------------------------------------------------------------------------------------ console
def test_console_album_and_one_after_another(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "config.yaml"
    config.write_text('storage: {path: ":memory:"}\nplugins:\n  facematch: {enabled: true, engine: local}\n')
    script = "\n".join(
        [
            f"/facematch {FACES / 'obama_1.jpg'} {FACES / 'obama_2.jpg'}",
            "/facematch",
            str(FACES / "biden_1.jpg"),
            str(FACES / "obama_2.jpg"),
            "",
        ]
    )
    done = subprocess.run(
        [sys.executable, str(root / "bot.py"), "--console", "--config", str(config)],
        input=script,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("[photo: ") == 2
    assert "likely the same person" in out and "Got the first photo" in out and "likely different people" in out
    assert out.index("likely the same person") < out.index("Got the first photo") < out.index("likely different")
