"""aipbot: a plugin-based Telegram bot over vision APIs.

    python bot.py [--config config.yaml] [--console] [--check]
    python bot.py serve [--config config.yaml] [--port N]     # cluster mode: a webhook front end
    python bot.py worker [--config config.yaml] [--port N]    # cluster mode: a Celery worker

With a Telegram token configured (``telegram.token``, usually ``${TELEGRAM_BOT_TOKEN}``) the bot polls
Telegram; without one, or with ``--console``, it chats on the terminal. ``--check`` validates the
configuration, loads the enabled plugins and exits. ``serve`` and ``worker`` are the two kinds of process of
cluster mode (README, "Scaling out"; core/pipeline/cluster.py): one config file for all; ``--port`` overrides
``server.port`` (a worker without ``--port`` serves no web pages).
"""

from __future__ import annotations

import argparse
import sys

from core.runtime.launch import finish, launch, setup_logging

__all__ = ["finish", "main", "setup_logging"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="aipbot: vision APIs in a chat")
    parser.add_argument("--config", default="config.yaml", help="configuration file (default: ./config.yaml)")
    parser.add_argument("--console", action="store_true", help="chat on the terminal instead of Telegram")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("role", nargs="?", choices=["serve", "worker"], help="cluster mode: a front end or a worker")
    parser.add_argument("--port", type=int, help="serve/worker: the web server's port (overrides server.port)")
    return launch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
