"""``bot.py worker``: a Celery worker whose pool processes each run the bot (see :mod:`core.pipeline.cluster` for
what a task is and why). Each pool process builds, after the fork, an event loop in a thread of its own and the
:class:`core.runtime.app.App` in its ``worker`` role, run by a :class:`core.runtime.roles.TelegramProcess`; the task
(``aipbot.chat``) runs that process's drain of one chat on that loop and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

from core.pipeline.cluster import CHAT_TASK, CeleryDispatcher, celery_app
from core.runtime.app import App
from core.runtime.roles import TelegramProcess

log = logging.getLogger(__name__)


class WorkerRuntime:
    """One Celery worker process's bot: an event loop in a thread of its own and the :class:`core.runtime.app.App` in
    its worker role, sending tasks through the process's one Celery app. Created in each worker process after the
    fork."""

    def __init__(self, config: dict[str, Any], celery: Any) -> None:
        server = config.get("server")
        if server and server.get("enabled", True):  # `--port N`: the pool's processes listen on N, N+1, …
            from billiard.process import current_process

            index = getattr(current_process(), "index", 0) or 0
            config = {**config, "server": {**server, "port": server["port"] + index}}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aipbot-worker-loop", daemon=True)
        self.thread.start()
        self.process: TelegramProcess = self.call(self._start(config, celery))

    async def _start(self, config: dict[str, Any], celery: Any) -> TelegramProcess:
        process = TelegramProcess(App(config, role="worker", celery=celery))
        await process.start()
        return process

    def call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run ``coro`` on the worker's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:  # the soft time limit, or the worker stopping: the coroutine stops too
            future.cancel()
            raise

    def drain(self, chat: str) -> tuple[int, bool]:
        """Handle ``chat`` (see :meth:`CeleryDispatcher.drain`): how many updates, and whether it is held elsewhere
        with updates still open (then the task comes back later: :meth:`CeleryDispatcher.held`)."""
        dispatcher = self.process.app.dispatcher
        assert isinstance(dispatcher, CeleryDispatcher)

        async def run() -> tuple[int, bool]:
            handled = await dispatcher.drain(chat)
            return handled, handled == 0 and await dispatcher.held(chat)

        return self.call(run())

    def stop(self) -> None:
        try:
            self.call(self.process.stop(), timeout=60)
        except Exception:
            log.exception("worker: stopping the bot failed")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


_runtime: WorkerRuntime | None = None


def run_worker(config: dict[str, Any], *, loglevel: str = "INFO") -> int:
    """``bot.py worker``: a Celery worker (prefork, ``cluster.worker_processes`` processes, one task each at a
    time) whose processes each run the bot with its plugins, engines and providers."""
    from celery.signals import worker_process_init, worker_process_shutdown

    app = celery_app(config)

    # max_retries=None: a task failing on the database or Redis (down) is retried, with backoff, until it succeeds
    @app.task(
        name=CHAT_TASK,
        bind=True,
        autoretry_for=(Exception,),
        retry_backoff=True,
        retry_backoff_max=60,
        max_retries=None,
    )
    def chat_task(self: Any, chat: str) -> int:
        if _runtime is None:
            raise RuntimeError("the worker process has no bot")
        handled, held = _runtime.drain(chat)
        if held:  # another worker has it, or had it and died: look again once its lock may have lapsed
            raise self.retry(countdown=config["cluster"]["chat_lock_seconds"])
        return handled

    def started(**_: Any) -> None:
        global _runtime
        _runtime = WorkerRuntime(config, app)

    def stopping(**_: Any) -> None:
        if _runtime is not None:
            _runtime.stop()

    worker_process_init.connect(started, weak=False)
    worker_process_shutdown.connect(stopping, weak=False)
    name = f"aipbot-{os.getpid()}@{socket.gethostname()}"
    argv = ["worker", "--pool=prefork", f"--concurrency={config['cluster']['worker_processes']}"]
    argv += [f"--loglevel={loglevel}", "-Q", config["cluster"]["queue"], "-n", name]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
    return 0
