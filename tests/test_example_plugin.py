"""A third-party plugin installed as a distribution with an `aipbot` entry point loads like a built-in one.

The distribution is tests/example_plugin (the README's example plugin), installed with pip into a
temporary directory for the test session.
"""

import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.runtime.config import ConfigError
from tests.harness import Harness

ROOT = Path(__file__).resolve().parent.parent
DIST = Path(__file__).resolve().parent / "example_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(DIST),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("aipbot_imageinfo", None)
    importlib.invalidate_caches()


def png(width: int, height: int) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


async def test_installed_plugin_registers_its_command_and_answers(installed):
    async with Harness({"plugins": {"imageinfo": {"units": "KiB"}}}) as bot:
        help_text = Harness.text(await bot.send("/help"))
        answer = Harness.text(await bot.send("/imageinfo", photos=[png(64, 48)]))
        status = bot.app.plugins.status(bot.app.services)
    assert "/imageinfo — Tell the size and format of a photo" in help_text
    assert answer.startswith("64×48 PNG, ") and answer.endswith(" KiB")
    assert status == {"imageinfo": "sizes in KiB"}


async def test_installed_plugin_config_is_validated_at_start_up(installed):
    with pytest.raises(ConfigError) as err:
        Harness({"plugins": {"imageinfo": {"units": "MB"}}})
    assert str(err.value) == "plugins.imageinfo.units: must be one of KB, KiB (got 'MB')"


def test_a_plugin_not_enabled_is_never_imported(installed, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"storage: {{path: {tmp_path / 'db'}}}\nplugins:\n  imageinfo: {{enabled: false}}\n")
    code = (
        "import sys; from core.runtime.config import load; from core.runtime.app import App;"
        f"app = App(load({str(config)!r}));"
        "print('imported' if 'aipbot_imageinfo' in sys.modules else 'not imported', len(app.commands))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": f"{installed}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "not imported 0", result.stderr


@pytest.mark.parametrize(
    ("name", "answer"),
    [("truncated.jpg", "This image is damaged or incomplete."), ("not_an_image.jpg", "This file is not an image.")],
)
async def test_installed_plugin_answers_bad_files_clearly(installed, name, answer):
    data = (ROOT / "examples" / "bad" / name).read_bytes()
    async with Harness({"plugins": {"imageinfo": {}}}) as bot:
        [reply] = await bot.send("/imageinfo", photos=[data])
    assert reply.text.startswith(answer) and reply.photo is None


async def test_installed_plugin_refuses_a_decompression_bomb(installed):
    import io

    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, "PNG")  # 144 megapixels in a few KB
    async with Harness({"plugins": {"imageinfo": {}}}) as bot:
        [reply] = await bot.send("/imageinfo", photos=[out.getvalue()])
    assert reply.photo is None and "too large" in reply.text.lower()


async def test_installed_plugin_sends_a_thumbnail_with_its_answer(installed):
    async with Harness({"plugins": {"imageinfo": {}}}) as bot:
        [reply] = await bot.send("/imageinfo", photos=[png(640, 480)])
    with Image.open(io.BytesIO(reply.photo)) as thumbnail:
        assert thumbnail.size == (256, 192)
