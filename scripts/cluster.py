"""Cluster mode on one machine: Redis, PostgreSQL, two front ends and two workers on loopback (``make cluster``).

    python scripts/cluster.py [--config config.yaml] [--dir data/cluster] [--fronts 2] [--workers 2]
                              [--front-port 8081] [--public-url URL]

Starts Debian's ``redis-server`` and PostgreSQL (``postgresql`` package; a database cluster of its own in
``<dir>/pg``, trust authentication on 127.0.0.1 only; started as root: run as the ``postgres`` user, its data in a
fresh folder under /tmp removed at the end), writes
``<dir>/config.yaml`` — the given config with ``telegram.mode: webhook``, the ``server:`` section (public URL
from ``--public-url`` or ``AIPBOT_PUBLIC_URL``) and the ``cluster:`` URLs of those two servers — then starts
``bot.py serve`` on ports 8081, 8082, … and ``bot.py worker`` processes, each logging to ``<dir>/<name>.log``.
Ctrl-C (or SIGTERM) stops them all, workers first finishing their current task. Telegram must reach the front
ends through a load balancer at the public URL (README, "Scaling out").
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"cluster: {what} exited with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"cluster: {what} did not listen on port {port} within {timeout:.0f} s")


def as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or sys.exit(
        "cluster: redis-server is not installed (apt-get install redis-server)"
    )
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(folder), "--logfile", str(folder / "redis.log")])
    wait_for_port(port, proc, "redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def start_postgres(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """PostgreSQL with its data in ``<folder>/pg``; as root (PostgreSQL runs as the ``postgres`` user, which may
    not enter the bot's private folders) in a fresh folder under /tmp instead, removed at the end."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        sys.exit("cluster: PostgreSQL is not installed (apt-get install postgresql)")
    initdb, postgres = f"{bins[-1]}/initdb", f"{bins[-1]}/postgres"
    if os.geteuid() == 0:
        folder = Path(tempfile.mkdtemp(prefix="aipbot-cluster-pg-"))
        shutil.chown(folder, "postgres", "postgres")
        atexit.register(shutil.rmtree, folder, True)
    data, sockets = folder / "pg", folder / "pg-sockets"
    for path in (data, sockets):
        path.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            as_postgres([initdb, "-D", str(data), "-U", "aipbot", "--auth=trust", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    port = free_port()
    args = [postgres, "-D", str(data), "-p", str(port), "-k", str(sockets), "-c", "listen_addresses=127.0.0.1"]
    with (folder / "postgres.log").open("a") as log:  # (under /tmp as root)
        proc = subprocess.Popen(as_postgres(args), stdout=log, stderr=log)
    wait_for_port(port, proc, "postgres")
    return proc, f"postgresql://aipbot@127.0.0.1:{port}/postgres"


def cluster_config(base: Path, public_url: str, first_port: int, redis_url: str, database_url: str) -> dict:
    config = yaml.safe_load(base.read_text()) or {}
    config.setdefault("telegram", {})["mode"] = "webhook"
    server = config.get("server") or {}
    config["server"] = {**server, "listen": "127.0.0.1", "port": first_port, "public_url": public_url}
    config["cluster"] = {**(config.get("cluster") or {}), "redis_url": redis_url, "database_url": database_url}
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml", type=Path)
    parser.add_argument("--dir", default="data/cluster", type=Path)
    parser.add_argument("--fronts", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--front-port", type=int, default=8081)
    parser.add_argument("--public-url", default=os.environ.get("AIPBOT_PUBLIC_URL", ""))
    args = parser.parse_args(argv)
    if not args.public_url:
        sys.exit("cluster: set AIPBOT_PUBLIC_URL (or --public-url): where Telegram reaches the front ends")
    args.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = args.dir.resolve()
    servers: list[subprocess.Popen[bytes]] = []
    bots: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping, failed = False, False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        redis_proc, redis_url = start_redis(folder)
        servers.append(redis_proc)
        pg_proc, database_url = start_postgres(folder)
        servers.append(pg_proc)
        config = cluster_config(args.config, args.public_url, args.front_port, redis_url, database_url)
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        path.chmod(0o600)
        command = [sys.executable, str(ROOT / "bot.py")]
        names = [(f"front{i}", ["serve", "--port", str(args.front_port + i)]) for i in range(args.fronts)]
        names += [(f"worker{i}", ["worker"]) for i in range(args.workers)]
        for name, role in names:
            with (folder / f"{name}.log").open("w") as log:
                proc = subprocess.Popen([*command, *role, "--config", str(path)], stdout=log, stderr=log, cwd=ROOT)
            bots.append((name, proc))
        ports = ", ".join(str(args.front_port + i) for i in range(args.fronts))
        print(f"cluster: redis {redis_url}, PostgreSQL {database_url}", file=sys.stderr)
        print(f"cluster: front ends on 127.0.0.1:{ports}; {args.workers} workers; logs in {folder}", file=sys.stderr)
        print("cluster: Ctrl-C stops everything", file=sys.stderr)
        while not stopping:
            for name, proc in bots:
                if proc.poll() is not None:
                    lines = (folder / f"{name}.log").read_text(errors="replace").strip().splitlines()
                    why = f": {lines[-1]}" if lines else ""
                    print(f"cluster: {name} exited with status {proc.returncode}{why}", file=sys.stderr)
                    stopping = failed = True
            time.sleep(0.2)
    finally:
        for _, proc in bots:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in bots:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
