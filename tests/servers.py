"""Real servers for tests: ``redis_server`` runs a ``redis-server`` of its own on 127.0.0.1.

Use it in any test: ``RedisState(redis_server.url, prefix=redis_server.prefix())`` — one server for the
whole session, and a fresh key prefix per user, so tests never see each other's keys. When
``redis-server`` is not installed the tests that need it fail (never skip): CI installs it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 10.0


@dataclass
class RedisServer:
    """A running ``redis-server``: ``url`` (database 0) and a source of unique key prefixes."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def prefix(self) -> str:
        """A key prefix no other test uses."""
        return f"test:{secrets.token_hex(6)}:"

    def client(self) -> redis.Redis:
        """A plain synchronous client, to look at what is really stored."""
        return redis.Redis.from_url(self.url, decode_responses=True)


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed, or would not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    """A server answering PING on ``port``, or None if it exited (the port was taken meanwhile)."""
    log = workdir / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(workdir), "--logfile", str(log)], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while proc.poll() is None:
            try:
                if client.ping():
                    return proc
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    proc.kill()
                    what = f"redis-server did not answer PING on port {port} within {START_TIMEOUT:.0f} s"
                    raise RedisUnavailable(what) from None
                time.sleep(0.05)
    finally:
        client.close()
    return None


@contextlib.contextmanager
def running_redis(workdir: Path | None = None) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 (no persistence) while the block runs, stopped at the end.

    ``workdir``: where its log goes (a temporary folder, removed afterwards, when None). For scripts outside
    pytest (the benches); raises :class:`RedisUnavailable` when it cannot run one.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed: apt-get install redis-server (.ci/run does it)")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aipbot-redis-")))
        for _ in range(3):
            port = _free_port()
            proc = _start(binary, port, workdir)
            if proc is not None:
                break
        else:
            logs = "; ".join(p.read_text(errors="replace").strip()[-300:] for p in workdir.glob("*.log"))
            raise RedisUnavailable(f"redis-server would not start: {logs}")
        try:
            yield RedisServer(port)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 for the whole session (no persistence), stopped at the end."""
    try:
        with running_redis(tmp_path_factory.mktemp("redis")) as server:
            yield server
    except RedisUnavailable as err:
        pytest.fail(str(err), pytrace=False)
