"""A cluster on loopback for tests and benchmarks: ``bot.py serve`` front ends and ``bot.py worker`` workers as real
processes, on one config file, against a real Redis, a database, the fake Bot API and (optionally) the fake Baidu.

    with Cluster(tmp_path, fake_telegram, redis_url, database) as cluster:
        cluster.start(fronts=2, workers=2)
        await cluster.ready()
        ...
        cluster.kill_worker(0)   # SIGKILL to the worker's whole process group (its Celery pool too)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


class Cluster:
    """Front ends and workers of one bot; ``config`` (a dict) is written to ``<dir>/config.yaml``."""

    def __init__(self, folder: Path, telegram: Any, redis_url: str, *, database: str = "", **config: Any) -> None:
        self.folder, self.telegram = folder, telegram
        self.fronts: list[tuple[subprocess.Popen[bytes], int, Path]] = []
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        port = free_port()  # the "load balancer's" public URL: only a name here (the fake delivers to each front end)
        section = {
            **telegram.config(mode="webhook", webhook_source_networks=["127.0.0.1/32"], album_wait=0.5)["telegram"],
            **config.pop("telegram", {}),
        }
        section["token"] = "${TEST_BOT_TOKEN}"
        cluster = {
            "redis_url": redis_url,
            "queue": f"test-{secrets.token_hex(4)}",
            "visibility_timeout": 8,
            "restore_seconds": 1,
            "chat_lock_seconds": 4,
            "sweep_seconds": 3,
            "task_time_limit": 60,
            **({"database_url": database} if database else {}),
            **config.pop("cluster", {}),
        }
        self.config = {
            "telegram": section,
            "server": {"listen": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}", "ready_cache": 0},
            "storage": {"path": str(folder / "db.sqlite3")},
            "cluster": cluster,
            "workers": {"io": 8, "cpu": 1},
            **config,
        }
        self.path = folder / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.config, allow_unicode=True))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TEST_BOT_TOKEN": telegram.TOKEN,
            "NO_PROXY": "127.0.0.1,localhost",
            "HOME": str(folder),
            "PYTHONPATH": str(ROOT),
        }

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("w") as stderr:
            return subprocess.Popen(
                [sys.executable, str(ROOT / "bot.py"), *args, "--config", str(self.path)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.env,
                cwd=self.folder,
                start_new_session=True,  # its own process group: kill_worker takes the Celery pool with it
            )

    def start_front(self) -> int:
        """One more front end; its port."""
        port = free_port()
        log = self.folder / f"front{len(self.fronts)}.log"
        self.fronts.append((self._spawn(["serve", "--port", str(port)], log), port, log))
        return port

    def start_worker(self) -> None:
        log = self.folder / f"worker{len(self.workers)}.log"
        self.workers.append((self._spawn(["worker"], log), log))

    def start(self, *, fronts: int = 2, workers: int = 2) -> None:
        for _ in range(fronts):
            self.start_front()
        for _ in range(workers):
            self.start_worker()
        self.telegram.balance_webhook(*[self.url(i) for i in range(len(self.fronts))])

    def url(self, front: int) -> str:
        """The webhook URL of front end ``front``."""
        return f"http://127.0.0.1:{self.fronts[front][1]}/telegram/webhook"

    async def ready(self, timeout: float = 90) -> None:
        """Wait until every front end set the webhook and every worker process connected to Telegram and Celery."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            logs = [log.read_text() for _, log in self.workers]
            fronts = [log.read_text() for _, _, log in self.fronts]
            started = ("webhook set" in text for text in fronts)
            if all(started) and all(" ready." in text and "connected to Telegram" in text for text in logs):
                return
            for proc, *_, log in [*self.fronts, *self.workers]:
                if proc.poll() is not None:
                    raise AssertionError(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the cluster did not start:\n" + self.logs())
            await asyncio.sleep(0.1)

    def kill_worker(self, index: int) -> None:
        """``kill -9`` the worker ``index`` and its pool processes (its whole process group), as a machine dies."""
        proc = self.workers[index][0]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-tail:]}" for *_, log in [*self.fronts, *self.workers] if log.exists()
        )

    def stop(self) -> dict[str, int]:
        """SIGTERM to everything still running, then wait; exit status by log name (SIGKILL after 30 s)."""
        procs = [(proc, log) for proc, *_, log in [*self.fronts, *self.workers] if proc.poll() is None]
        for proc, _ in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        codes = {}
        for proc, log in procs:
            try:
                codes[log.name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[log.name] = proc.wait(10)
        return codes

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def processes() -> list[tuple[int, str, str, int, int]]:
    """Every process of this machine as ``(pid, name, state, parent pid, session id)``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        state, ppid, _, sid = text[text.rindex(")") + 2 :].split()[:4]
        found.append((int(stat.parent.name), text[text.index("(") + 1 : text.rindex(")")], state, int(ppid), int(sid)))
    return found
