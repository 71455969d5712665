"""What ``bot.py`` runs: logging, the configuration checks of each role, the assembled :class:`App` in the role
the arguments name, and a clean exit (see ``bot.py``'s docstring)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading

from core.infra import logjson, redact
from core.runtime.config import ConfigError, load


def setup_logging(level: str, format: str = "text") -> None:
    """Log to stderr (stdout belongs to the console chat) through the redacting filter, as plain lines or as
    JSON lines (``logging.format``; core/infra/logjson.py)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logjson.formatter(format))
    handler.addFilter(logjson.ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    redact.install(root)
    # httpx logs every request URL at INFO (Telegram URLs contain the bot token); PTB's DEBUG lines carry
    # whole outgoing messages (verification results, links). Redaction would mask secrets in them anyway.
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("telegram").setLevel(max(logging.INFO, root.level))


def launch(args: argparse.Namespace) -> int:
    """Run ``bot.py`` as its arguments say (``config``, ``console``, ``check``, ``role``, ``port``); the exit status
    (2: a configuration error, in one line)."""
    try:
        config = load(args.config)
        setup_logging(config["logging"]["level"], config["logging"]["format"])
        if args.role:
            cluster_role(config, args.role, args.port)
        from core.runtime.app import App

        console = args.console or (not args.role and not config["telegram"]["token"])
        transport = None
        if console and not args.check:
            from core.console.terminal import ConsoleTransport

            transport = ConsoleTransport(sys.stdout)
        app = App(config, transport=transport, role="console" if console else args.role or "bot")
    except ConfigError as err:
        print(f"aipbot: configuration error: {err}", file=sys.stderr)
        return 2

    log = logging.getLogger("aipbot")
    if args.check:
        names = ", ".join(app.plugins.enabled) or "none"
        print(f"aipbot: configuration OK; plugins: {names}; commands: {len(app.commands)}", file=sys.stderr)
        app.services.close()
        return 0
    if args.role == "worker":  # the configuration holds (the App above): each worker process builds its own
        app.services.close()
        from core.runtime.worker import run_worker

        return finish(run_worker(config, loglevel=config["logging"]["level"]))
    try:
        app.web.bind()  # server: configured: listen now, so a port in use stops here (exit 2) like any config error
    except ConfigError as err:
        print(f"aipbot: configuration error: {err}", file=sys.stderr)
        app.services.close()
        return 2
    try:
        if console:
            if not args.console:
                log.warning("No Telegram token configured (telegram.token): starting the console chat.")
            if config["logging"]["level"] == "INFO":  # keep the chat readable: warnings and errors only
                logging.getLogger().setLevel(logging.WARNING)
            from core.console.terminal import run_console

            asyncio.run(run_console(app))
        else:
            from core.runtime.roles import run_telegram

            run_telegram(app)
    except KeyboardInterrupt:
        pass
    return finish(0)


def cluster_role(config: dict, role: str, port: int | None) -> None:
    """Check that ``config`` can run a cluster process (a :class:`ConfigError` otherwise) and apply ``--port``."""
    if not config["cluster"]["redis_url"]:
        raise ConfigError("cluster.redis_url", f"bot.py {role} needs Redis (the shared state and Celery's broker)")
    if not config["telegram"]["token"]:
        raise ConfigError("telegram.token", f"bot.py {role} needs the bot's token")
    if role == "serve" and config["telegram"]["mode"] != "webhook":
        raise ConfigError("telegram.mode", "bot.py serve is a webhook front end: set telegram.mode: webhook")
    broker = config["cluster"]["broker_url"]
    if broker:  # the state's Redis is checked when the App opens it; a broker of its own is checked here
        from core.pipeline.cluster import check_broker

        check_broker(broker)
    if port is not None:
        if not config["server"]:
            raise ConfigError("server", "--port needs a server: section")
        config["server"]["port"] = port
    elif role == "worker" and config["server"]:
        config["server"] = {**config["server"], "enabled": False}  # its URLs still build links to the front ends


def finish(status: int) -> int:
    """``status``, once no thread of the bot is running any more; see :func:`core.runtime.app.wait_for_threads`.

    A thread still alive after the bounded wait would abort the interpreter's finalization (exit 134),
    so then the process leaves without finalizing: streams flushed, ``os._exit(status)``.
    """
    from core.runtime.app import SHUTDOWN_WAIT, wait_for_threads

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
