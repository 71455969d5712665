"""Assembly: config → plugins → message catalogue → services → router. Transports run an :class:`App`."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.chat import Command, Reply, Transport
from core.codec import Codec
from core.config import ConfigError
from core.conversation import Conversations
from core.defaults import NAME as DEFAULT_PLUGIN
from core.i18n import Catalogue, core_catalogue
from core.intake import intake
from core.logjson import carried
from core.metrics import Metrics
from core.outbox import QUEUED, Outbox, outbox
from core.plugins import PluginManager
from core.providers import make_client
from core.router import Router
from core.shared import SharedRedis
from core.state import RedisUnavailable, State, open_state
from core.store import Store, StoreUnavailable
from core.tokens import TokenService
from core.web import WebServer

log = logging.getLogger(__name__)
T = TypeVar("T")


class BotServices:
    """The shared services plugins reach through ``ctx.services`` (see ``core.chat.Services``)."""

    def __init__(self, config: dict[str, Any], catalogue: Catalogue, store: Store, state: State) -> None:
        self.config = config
        self.catalogue = catalogue
        self.store = store
        self.state = state
        self.conversations = Conversations(state, lambda: config["pending_minutes"])
        self.codec = Codec.for_token(config["telegram"]["token"])
        self.commands: list[Command] = []
        self.plugin_status: Callable[[], dict[str, str]] = dict
        self.transport: Transport | None = None
        self.handles_updates = True  # a cluster front end (core.cluster) sets it False before the plugins start
        self.io_pool = ThreadPoolExecutor(config["workers"]["io"], thread_name_prefix="aipbot-io")
        self.cpu_pool = ThreadPoolExecutor(config["workers"]["cpu"], thread_name_prefix="aipbot-cpu")
        # one thread: the store serialises its calls anyway, and they never queue behind provider calls
        self.db_pool = ThreadPoolExecutor(1, thread_name_prefix="aipbot-db")
        self._jobs: list[asyncio.Task[None]] = []
        self._providers: dict[str, Any] = {}
        self._providers_lock = threading.Lock()
        # the one token service: every credential of every provider client; in cluster mode its cache, its
        # single flight and the provider QPS budgets are shared through Redis (core.shared)
        redis_url = (config.get("cluster") or {}).get("redis_url") or ""
        self.tokens = TokenService(shared=SharedRedis(redis_url) if redis_url else None)
        self.metrics = self.tokens.metrics = Metrics()  # this bot's metrics (GET /metrics), not the process's
        self.web = WebServer(config.get("server"), self, self.metrics)  # the route registry and the web server
        self.outbox = Outbox(self)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking I/O in the I/O pool (``workers.io`` threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, functools.partial(carried(fn), *args))

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work in the engine pool (``workers.cpu`` threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, functools.partial(carried(fn), *args))

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database call in the database's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self.db_pool, functools.partial(carried(fn), *args))

    async def send(self, chat_id: int, reply: Reply) -> int | None:
        """Send a message outside a command (background jobs); a message that must arrive goes through
        :attr:`outbox` instead (``await services.outbox.put(chat_id, reply, key=...)``)."""
        if self.transport is None:
            raise RuntimeError("no transport is running")
        return await self.transport.send(chat_id, reply)

    def every(self, seconds: float, job: Callable[[], Awaitable[None]], *, name: str = "job") -> None:
        """Run ``await job()`` every ``seconds`` (first run after ``seconds``) until the bot stops.

        Call from ``aipbot_startup``. A failing run is logged and the schedule goes on.
        """

        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.exception("periodic job %s failed", name)

        self._jobs.append(asyncio.get_running_loop().create_task(loop(), name=f"aipbot-{name}"))

    def deep_link(self, command: str, payload: str, *, signed: bool = False) -> str:
        """The transport's link that comes back to ``command``'s ``on_deep_link`` with ``payload``."""
        if self.transport is None:
            raise RuntimeError("no transport is running")
        return self.transport.deep_link(self.codec.deep_link(command, payload, signed=signed))

    def provider(self, name: str) -> Any:
        """The shared client of provider ``name`` (e.g. ``baidu``), or None when it is not configured."""
        with self._providers_lock:
            if name not in self._providers:
                self._providers[name] = make_client(name, self.config, self.tokens)
                if self._providers[name] is not None:
                    self._providers[name].metrics = self.metrics
            return self._providers[name]

    def close(self) -> None:
        self.outbox.close()
        for job in self._jobs:
            job.cancel()
        for client in self._providers.values():
            if hasattr(client, "close"):
                client.close()
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.db_pool.shutdown(wait=True, cancel_futures=True)
        self.conversations.close()
        self.store.close()
        self.state.close()
        if self.tokens.shared is not None:
            self.tokens.shared.close()


#: Seconds the shutdown waits, in all, for the threads still running (engine warm-ups, the worker pools).
SHUTDOWN_WAIT = 30.0


def wait_for_threads(timeout: float = SHUTDOWN_WAIT) -> list[threading.Thread]:
    """Join every other thread still running, for at most ``timeout`` seconds in all; those still alive.

    Call after :meth:`App.stop`, outside the event loop, just before the process exits. Why: the
    plugins warm their engines in daemon threads (``aipbot_startup`` must return at once), and the CPU
    pool runs engine calls; those threads spend their time inside onnxruntime (OCR) and dlib (faces),
    which release the GIL around native work. When the interpreter finalizes while such a thread is
    still inside native code, CPython 3.11 ends that thread with ``pthread_exit`` as soon as it tries to
    take the GIL back (core dumps show ``take_gil`` → ``PyThread_exit_thread`` → ``pthread_exit`` under
    ``_dlib_pybind11`` and ``onnxruntime_pybind11_state`` frames). glibc implements ``pthread_exit`` as a
    forced stack unwind; the unwind reaches a C++ frame that must not throw (pybind11's
    ``gil_scoped_release`` destructor, which retakes the GIL, is ``noexcept``: pybind/pybind11#2215), so
    C++ calls ``std::terminate``: "terminate called without an active exception", SIGABRT, exit status
    134. It happened whenever the console chat reached end of input while a warm-up was still
    loading (``import dlib``, ``InferenceSession``). Joining the threads first means no thread is left
    in native code when finalization starts. The caller must not finalize the interpreter while any
    thread returned here is alive (``bot.py`` leaves with ``os._exit`` after flushing).
    """
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    left: list[threading.Thread] = []
    for thread in threading.enumerate():
        if thread is current or thread is threading.main_thread() or isinstance(thread, threading._DummyThread):
            continue  # a dummy thread (started outside Python) cannot be joined, nor is it ended at exit
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left


def _open_store(path: str, redis_url: str = "", database_url: str = "") -> tuple[Store, State]:
    """The database (PostgreSQL when ``cluster.database_url`` is set, else the SQLite file ``path``) and the
    state store, or a :class:`ConfigError` naming ``storage.path``, ``cluster.database_url`` or
    ``cluster.redis_url`` (one line, no password)."""
    try:
        store = Store(database_url) if database_url else Store(path)
    except StoreUnavailable as err:
        if database_url:
            raise ConfigError("cluster.database_url", str(err)) from None
        raise ConfigError("storage.path", f"cannot open the database {path!r} ({err})") from None
    except OSError as err:
        raise ConfigError("storage.path", f"cannot open the database {path!r} ({err})") from None
    try:
        return store, open_state(path, redis_url)
    except OSError as err:
        store.close()
        raise ConfigError("storage.path", f"cannot open the database {path!r} ({err})") from None
    except RedisUnavailable as err:
        store.close()
        raise ConfigError("cluster.redis_url", str(err)) from None


#: Gauges read at each scrape of /metrics: (name, help, query).
_DEPTHS = (
    (
        "aipbot_outbox_depth",
        "Messages in the outbox not yet delivered",
        select(func.count()).select_from(outbox).where(outbox.c.state == QUEUED),
    ),
    (
        "aipbot_intake_depth",
        "Updates received and not yet handled",
        select(func.count()).select_from(intake).where(intake.c.done.is_(None)),
    ),
)


class App:
    """The assembled bot, independent of any transport."""

    def __init__(self, config: dict[str, Any], extra_plugins: dict[str, Any] | None = None) -> None:
        self.config = config
        self.plugins = PluginManager(config, extra_plugins)
        self.catalogue = Catalogue()
        self.catalogue.add(core_catalogue().messages())
        for messages in self.plugins.messages():
            self.catalogue.add(messages)
        self.services = BotServices(
            config,
            self.catalogue,
            *_open_store(config["storage"]["path"], config["cluster"]["redis_url"], config["cluster"]["database_url"]),
        )
        self.services.commands = self.plugins.commands(self.services)
        self.services.plugin_status = lambda: self.plugins.status(self.services)
        self.commands = [c for c in self.services.commands if c.plugin != DEFAULT_PLUGIN]  # the plugins' own
        names = {c.name for c in self.commands}
        for name in config["access"]["daily_quota"]:
            if name not in names:
                enabled = ", ".join(sorted(names)) or "none"
                raise ConfigError(f"access.daily_quota.{name}", f"no such command (enabled: {enabled})")
        default = config["default_photo_command"]
        photo_commands = sorted(c.name for c in self.commands if c.takes_photos)
        if default and default not in photo_commands:
            raise ConfigError(
                "default_photo_command",
                f"no enabled photo command /{default} (enabled: {', '.join(photo_commands) or 'none'})",
            )
        for plugin, route in self.plugins.web_routes(self.services):
            self.services.web.add(route, owner=f"plugins.{plugin}")
        self.router = Router(self.services, self.services.commands)
        self.metrics, self.web = self.services.metrics, self.services.web
        for name, what, query in _DEPTHS:
            self.metrics.gauge(name, what, self._counter(query))
        self._started = False

    def _counter(self, query: Any) -> Callable[[], Awaitable[int]]:
        """A gauge reader: ``SELECT COUNT(*) …`` in the database's thread (0 while its table does not exist)."""

        def count() -> int:
            try:
                return int(self.services.store.execute(query)[0][0])
            except (OperationalError, ProgrammingError):  # e.g. no intake table: the console does not journal
                return 0

        return lambda: self.services.run_db(count)

    def start(self, transport: Transport) -> None:
        """Attach the transport, start the plugins (they must return at once) and the web server (when configured:
        a port in use is a :class:`ConfigError` before any plugin starts)."""
        self.services.transport = transport
        self.web.bind()
        self.services.outbox.start()  # resumes what earlier runs left queued
        self.plugins.startup(self.services)
        self._started = True
        self.web.start(transport)

    def stop(self) -> None:
        """Stop the web server, the plugins, and release threads and the database."""
        self.web.stop()  # stops listening now; `await app.web.closed()` waits for requests in progress
        if self._started:
            self._started = False
            try:
                self.plugins.shutdown(self.services)
            finally:
                self.services.close()
