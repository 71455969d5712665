"""``make cluster`` (scripts/cluster.py) as an admin tries it: Redis, PostgreSQL, two front ends and two workers on
loopback from one config file; users get answers; SIGTERM stops everything, servers included."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.cluster import ROOT, free_port, processes
from tests.fakes.baidu import FakeBaidu
from tests.test_cluster import DATA, RECEIPT
from tests.test_intake_process import accepted


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` ports in a row that are free now (the script puts its front ends on N, N+1, …)."""
    while True:
        first, sockets = free_port(), []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def session(sid: int) -> list[str]:
    """The names of the live processes of session ``sid`` (zombies left out)."""
    return [name for _, name, state, _, session in processes() if session == sid and state != "Z"]


@pytest.fixture
def fake_telegram():
    from tests.fakes.telegram import FakeTelegram

    with FakeTelegram() as fake:
        yield fake


async def test_make_cluster_starts_redis_postgres_two_front_ends_two_workers_and_stops_them(tmp_path, fake_telegram):
    with FakeBaidu() as baidu:
        image = (DATA / "text" / "receipt.jpg").read_bytes()
        baidu.set_text(image, RECEIPT)
        base = {
            **fake_telegram.config(webhook_source_networks=["127.0.0.1/32"]),
            **baidu.config(),
            "plugins": {"ocr": {"engine": "baidu"}},
        }
        base["telegram"]["token"] = "${TEST_BOT_TOKEN}"
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(base))
        port = consecutive_free_ports(2)
        env = {**os.environ, "TEST_BOT_TOKEN": fake_telegram.TOKEN, "AIPBOT_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        args = [sys.executable, str(ROOT / "scripts" / "cluster.py"), "--config", str(tmp_path / "config.yaml")]
        args += ["--dir", str(tmp_path / "cluster"), "--front-port", str(port)]
        log = (tmp_path / "cluster.log").open("w")
        script = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while len(fake_telegram.calls_of("setWebhook")) < 2 or len(fake_telegram.calls_of("getMe")) < 4:
                assert script.poll() is None and time.monotonic() < deadline, (tmp_path / "cluster.log").read_text()
                await asyncio.sleep(0.2)
            fake_telegram.balance_webhook(*[f"http://127.0.0.1:{port + i}/telegram/webhook" for i in range(2)])
            for user in (1, 2, 3, 4):
                fake_telegram.user_sends_photo(image, caption="/ocr", user_id=user)
            answer = "\n".join(RECEIPT)
            while len(accepted(fake_telegram, answer)) < 4:
                logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "cluster").glob("*.log"))
                assert time.monotonic() < deadline, logs
                await asyncio.sleep(0.2)
            assert accepted(fake_telegram, answer) == dict.fromkeys((1, 2, 3, 4), 1)
            names = session(script.pid)
            assert {"redis-server", "postgres"} <= set(names), names
            os.kill(script.pid, signal.SIGTERM)
            assert script.wait(90) == 0, (tmp_path / "cluster.log").read_text()
            assert session(script.pid) == []  # nothing left running
        finally:
            if script.poll() is None:
                os.killpg(script.pid, signal.SIGKILL)
            log.close()
