"""aipbot: a plugin-based Telegram bot over vision APIs.

    python bot.py [--config config.yaml] [--console] [--check]

With a Telegram token configured (``telegram.token``, usually ``${TELEGRAM_BOT_TOKEN}``) the bot polls
Telegram; without one, or with ``--console``, it chats on the terminal. ``--check`` validates the
configuration, loads the enabled plugins and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading

from core import redact
from core.config import ConfigError, load


def setup_logging(level: str) -> None:
    """Log to stderr (stdout belongs to the console chat) through the redacting filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    redact.install(root)
    # httpx logs every request URL at INFO (Telegram URLs contain the bot token); PTB's DEBUG lines carry
    # whole outgoing messages (verification results, links). Redaction would mask secrets in them anyway.
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("telegram").setLevel(max(logging.INFO, root.level))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="aipbot: vision APIs in a chat")
    parser.add_argument("--config", default="config.yaml", help="configuration file (default: ./config.yaml)")
    parser.add_argument("--console", action="store_true", help="chat on the terminal instead of Telegram")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)

    try:
        config = load(args.config)
        setup_logging(config["logging"]["level"])
        from core.app import App

        app = App(config)
    except ConfigError as err:
        print(f"aipbot: configuration error: {err}", file=sys.stderr)
        return 2

    log = logging.getLogger("aipbot")
    if args.check:
        names = ", ".join(app.plugins.enabled) or "none"
        print(f"aipbot: configuration OK; plugins: {names}; commands: {len(app.commands)}", file=sys.stderr)
        app.services.close()
        return 0
    try:
        app.web.bind()  # server: configured: listen now, so a port in use stops here (exit 2) like any config error
    except ConfigError as err:
        print(f"aipbot: configuration error: {err}", file=sys.stderr)
        app.services.close()
        return 2
    try:
        if args.console or not config["telegram"]["token"]:
            if not args.console:
                log.warning("No Telegram token configured (telegram.token): starting the console chat.")
            if config["logging"]["level"] == "INFO":  # keep the chat readable: warnings and errors only
                logging.getLogger().setLevel(logging.WARNING)
            from core.transports.console import run_console

            asyncio.run(run_console(app))
        else:
            from core.transports.telegram import run_telegram

            run_telegram(app)
    except KeyboardInterrupt:
        pass
    return finish(0)


def finish(status: int) -> int:
    """``status``, once no thread of the bot is running any more; see :func:`core.app.wait_for_threads`.

    A thread still alive after the bounded wait would abort the interpreter's finalization (exit 134),
    so then the process leaves without finalizing: streams flushed, ``os._exit(status)``.
    """
    from core.app import SHUTDOWN_WAIT, wait_for_threads

    try:
        left = wait_for_threads(SHUTDOWN_WAIT)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        left = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if not left:
        return status
    logging.getLogger("aipbot").warning(
        "exiting without waiting any longer for threads still running: %s", ", ".join(t.name for t in left)
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout must not stop the exit
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
