"""Real servers for tests: ``redis_server`` runs a ``redis-server`` of its own on 127.0.0.1, ``postgres_server``
a PostgreSQL cluster of its own.

Use them in any test: ``RedisState(redis_server.url, prefix=redis_server.prefix())`` — one server for the
whole session, and a fresh key prefix per user, so tests never see each other's keys;
``Store(postgres_server.database())`` — one PostgreSQL server for the session, a fresh database per call.
``store_target`` runs a test twice, on a SQLite file and on a fresh PostgreSQL database (``Store(store_target)``).
When ``redis-server`` or PostgreSQL is not installed the tests that need it fail (never skip): CI installs them
(``scripts/test-packages``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
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


def bot_process(config: Path, cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A real ``bot.py --config config`` in ``cwd``, its stderr in ``log``, with a bare environment (``PATH``,
    ``HOME``, no proxy for 127.0.0.1) plus ``env`` (the test's token and keys, ``PYTHONPATH`` for a plugin)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_PROXY": "127.0.0.1,localhost", "HOME": str(cwd)}
    root = Path(__file__).resolve().parent.parent
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, str(root / "bot.py"), "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**base, **env},
            cwd=cwd,
        )


def free_port() -> int:
    """A port nobody listens on on 127.0.0.1 (bound, then released)."""
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
            port = free_port()
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


# ---------------------------------------------------------------------------------------------- PostgreSQL
@dataclass
class PostgresServer:
    """A running PostgreSQL server on 127.0.0.1 (trust authentication, superuser ``postgres``)."""

    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server (as ``cluster.database_url`` takes it)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A fresh, empty database no other test uses; its URL."""
        name = f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


#: initdb's options besides the folder, the superuser and trust authentication (the test cluster only).
_INITDB = ("--encoding=UTF8", "--locale=C")


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL is not installed: apt-get install postgresql (scripts/test-packages does it)", pytrace=False
        )
    return Path(found[-1]).parent


def _as_postgres() -> dict[str, Any]:
    """Run as the ``postgres`` OS user when the tests run as root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _start_postgres(bindir: Path, datadir: Path, sockets: Path, port: int) -> subprocess.Popen[bytes] | None:
    """A server accepting connections on ``port``, or None if it exited (the port was taken meanwhile)."""
    log = open(datadir.parent / f"postgres-{port}.log", "wb")  # noqa: SIM115 (the server writes it until the end)
    settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"]
    args = [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port), "-h", "127.0.0.1", "-k", str(sockets)]
    for setting in settings:
        args += ["-c", setting]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **_as_postgres())
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=1):
                return proc
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"PostgreSQL did not accept connections on port {port} within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for the whole session (``fsync=off``: nothing needs to survive),
    its data and socket folders in a temporary folder, stopped and removed at the end."""
    bindir = _postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="aipbot-postgres-"))  # in /tmp: the postgres user must reach it
    datadir, sockets = workdir / "data", workdir / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (workdir, sockets):
            shutil.chown(path, "postgres", "postgres")
    proc = None
    try:
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "--no-sync", *_INITDB],
            capture_output=True,
            **_as_postgres(),
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed: {init.stderr.decode(errors='replace').strip()[-300:]}", pytrace=False)
        for _ in range(3):
            port = free_port()
            proc = _start_postgres(bindir, datadir, sockets, port)
            if proc is not None:
                break
        else:
            logs = "; ".join(p.read_text(errors="replace").strip()[-300:] for p in workdir.glob("*.log"))
            pytest.fail(f"PostgreSQL would not start: {logs}", pytrace=False)
        yield PostgresServer(port)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # a "fast" shutdown: clients are disconnected
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``Store(...)`` opens, once per database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "aipbot.sqlite3")
    return request.getfixturevalue("postgres_server").database()
