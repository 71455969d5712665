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

from core.contract.chat import Command, Reply, Transport
from core.contract.codec import Codec
from core.contract.fields import ConfigError
from core.contract.i18n import Catalogue, core_catalogue
from core.infra import keys
from core.infra.logjson import carried
from core.infra.metrics import Metrics
from core.infra.shared import SharedRedis
from core.infra.state import RedisUnavailable, State, open_state
from core.infra.store import Store, StoreUnavailable
from core.infra.tokens import TokenService
from core.infra.web import WebServer
from core.pipeline.cluster import CeleryDispatcher, celery_app, task_sender
from core.pipeline.conversation import Conversations
from core.pipeline.defaults import NAME as DEFAULT_PLUGIN
from core.pipeline.dispatch import Dispatcher, LocalDispatcher
from core.pipeline.handler import UpdateHandler
from core.pipeline.intake import Intake
from core.pipeline.journal import intake
from core.pipeline.router import Router
from core.providers import make_client
from core.runtime.plugins import PluginManager
from core.sending.outbox import QUEUED, Outbox, outbox
from core.sending.pacer import SendLimiter
from core.telegram.botapi import TelegramBot
from core.telegram.decode import TelegramCodec
from core.telegram.webhook import WebhookEndpoint, webhook_secret

log = logging.getLogger(__name__)
T = TypeVar("T")


class BotServices:
    """The shared services plugins reach through ``ctx.services`` (see ``core.contract.chat.Services``). Everything
    it holds is given to its constructor by :class:`App`."""

    def __init__(
        self,
        config: dict[str, Any],
        catalogue: Catalogue,
        store: Store,
        state: State,
        *,
        tokens: TokenService,
        metrics: Metrics,
        web: WebServer,
        pools: Pools,
        plugins: PluginManager,
        transport: Transport | None,
        handles_updates: bool = True,
    ) -> None:
        self.config = config
        self.catalogue = catalogue
        self.store = store
        self.state = state
        self.tokens = tokens
        self.metrics = metrics  # this bot's metrics (GET /metrics), not the process's
        self.web = web  # the route registry and the web server
        self.pools = pools
        self.run_blocking = pools.run_blocking  # blocking I/O (provider calls) in the `workers.io` threads
        self.run_cpu = pools.run_cpu  # CPU-heavy work (local engines) in the `workers.cpu` threads
        self.run_db = pools.run_db  # database calls in the database's own thread
        self.transport = transport
        #: False in a cluster front end (``bot.py serve``): it runs no handler, so plugins skip engine warm-ups
        self.handles_updates = handles_updates
        self.conversations = Conversations(state, lambda: config["pending_minutes"])
        self.codec = Codec.for_token(config["telegram"]["token"])
        self._plugins = plugins
        self._commands: list[Command] | None = None
        self._jobs: list[asyncio.Task[None]] = []
        self._providers: dict[str, Any] = {}
        self._providers_lock = threading.Lock()
        self.outbox = Outbox(self)

    @property
    def commands(self) -> list[Command]:
        """Every command of every enabled plugin, the built-in ones included (asked of the plugins once)."""
        if self._commands is None:
            self._commands = self._plugins.commands(self)
        return self._commands

    def plugin_status(self) -> dict[str, str]:
        """Plugin name → its one-line status for ``/plugins``."""
        return self._plugins.status(self)

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
            return self._providers[name]

    def close(self) -> None:
        self.outbox.close()
        for job in self._jobs:
            job.cancel()
        for client in self._providers.values():
            if hasattr(client, "close"):
                client.close()
        self.pools.close()
        self.conversations.close()
        self.store.close()
        self.state.close()
        if self.tokens.shared is not None:
            self.tokens.shared.close()


class Pools:
    """The executors blocking work runs in, sized from ``workers:`` (the event loop never blocks)."""

    def __init__(self, workers: dict[str, Any]) -> None:
        self.io = ThreadPoolExecutor(workers["io"], thread_name_prefix="aipbot-io")
        self.cpu = ThreadPoolExecutor(workers["cpu"], thread_name_prefix="aipbot-cpu")
        # one thread: the store serialises its calls anyway, and they never queue behind provider calls
        self.db = ThreadPoolExecutor(1, thread_name_prefix="aipbot-db")

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking I/O in the I/O pool (``workers.io`` threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.io, functools.partial(carried(fn), *args))

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work in the engine pool (``workers.cpu`` threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, functools.partial(carried(fn), *args))

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database call in the database's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self.db, functools.partial(carried(fn), *args))

    def close(self) -> None:
        self.io.shutdown(wait=False, cancel_futures=True)
        self.cpu.shutdown(wait=False, cancel_futures=True)
        self.db.shutdown(wait=True, cancel_futures=True)


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
        state = open_state(path, redis_url)
    except OSError as err:
        store.close()
        raise ConfigError("storage.path", f"cannot open the database {path!r} ({err})") from None
    except RedisUnavailable as err:
        store.close()
        raise ConfigError("cluster.redis_url", str(err)) from None
    return store, state


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
#: The process roles (``bot.py``, ``bot.py serve``, ``bot.py worker``, ``bot.py --console``).
ROLES = ("bot", "serve", "worker", "console")


class App:
    """The assembled bot: the one composition root. Every object gets what it needs through its constructor.

    ``transport``: what the bot talks through when it is not Telegram (the console, a test's recorder); without
    one, a bot with a Telegram token gets the Bot API facade and, for the roles ``bot``, ``serve`` and
    ``worker``, the intake (journal, dispatcher) and in webhook mode the webhook endpoint. ``celery``: the cluster
    roles' Celery app (``core.pipeline.cluster.celery_app``), made once per process by the caller.
    """

    def __init__(
        self,
        config: dict[str, Any],
        extra_plugins: dict[str, Any] | None = None,
        *,
        transport: Transport | None = None,
        role: str = "bot",
        celery: Any = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.config = config
        self.role = role
        self.plugins = PluginManager(config, extra_plugins)
        self.catalogue = Catalogue()
        self.catalogue.add(core_catalogue().messages())
        for messages in self.plugins.messages():
            self.catalogue.add(messages)
        # the one place that opens the bot's database and its Redis clients (the state's, and the synchronous one
        # of the token cache and the rate budgets); cluster.redis_url is read here only
        cluster = config["cluster"]
        store, state = _open_store(config["storage"]["path"], cluster["redis_url"], cluster["database_url"])
        shared = SharedRedis(cluster["redis_url"]) if cluster["redis_url"] else None
        self.metrics = Metrics()  # this bot's metrics (GET /metrics), not the process's
        tokens = TokenService(shared=shared, metrics=self.metrics)
        pools = Pools(config["workers"])
        self.web = WebServer(config.get("server"), self.metrics, config["telegram"]["trusted_proxies"])
        self.telegram: TelegramBot | None = None
        if transport is None and config["telegram"]["token"] and role != "console":
            # cluster mode: the send rates are the whole cluster's
            limiter = SendLimiter.from_config(config["telegram"], metrics=self.metrics, shared=shared)
            transport = self.telegram = TelegramBot(config["telegram"], limiter, pools.run_cpu, self.metrics)
        self.transport = transport
        self.services = BotServices(
            config,
            self.catalogue,
            store,
            state,
            tokens=tokens,
            metrics=self.metrics,
            web=self.web,
            pools=pools,
            plugins=self.plugins,
            transport=transport,
            handles_updates=role != "serve",
        )
        self.plugins.configure(self.services)  # each plugin gets its config once, before anything else
        self.commands = [c for c in self.services.commands if c.plugin != DEFAULT_PLUGIN]  # the plugins' own
        self._check_commands()
        for plugin, route in self.plugins.web_routes(self.services):
            self.web.add(route, owner=f"plugins.{plugin}")
        self.router = Router(self.services, self.services.commands)
        for name, what, query in _DEPTHS:
            self.metrics.gauge(name, what, self._counter(query))
        self.web.ready_check("config", self._config_loaded)
        self.web.ready_check("store", self._store_answers)
        self.web.ready_check("state", self._state_answers)
        self.intake: Intake | None = None
        self.dispatcher: Dispatcher | None = None
        self.webhook: WebhookEndpoint | None = None
        if self.telegram is not None:
            self._assemble_telegram(self.telegram, celery)
        ping = getattr(transport, "ping", None)
        if callable(ping):
            self.web.ready_check("telegram", ping, cache=self.web.ready_cache)
        self._started = False

    def _check_commands(self) -> None:
        names = {c.name for c in self.commands}
        for name in self.config["access"]["daily_quota"]:
            if name not in names:
                enabled = ", ".join(sorted(names)) or "none"
                raise ConfigError(f"access.daily_quota.{name}", f"no such command (enabled: {enabled})")
        default = self.config["default_photo_command"]
        photo_commands = sorted(c.name for c in self.commands if c.takes_photos)
        if default and default not in photo_commands:
            raise ConfigError(
                "default_photo_command",
                f"no enabled photo command /{default} (enabled: {', '.join(photo_commands) or 'none'})",
            )

    def _assemble_telegram(self, bot: TelegramBot, celery: Any) -> None:
        """The Telegram side of the pipeline: codec → handler → dispatcher → intake, and the webhook endpoint."""
        config, telegram = self.config, self.config["telegram"]
        conversations = self.services.conversations
        codec = TelegramCodec(
            config,
            answering=conversations.wants_text,
            photo_from_ref=bot.photo_from_ref,
            video_from_ref=bot.video_from_ref,
        )
        handler = UpdateHandler(codec, self.router, self.catalogue, self.metrics)
        albums = {"album_wait": telegram["album_wait"], "album_max_wait": telegram["album_max_wait"]}
        dispatcher: LocalDispatcher | CeleryDispatcher
        if self.role == "bot":
            dispatcher = LocalDispatcher(**albums)
        else:
            cluster = config["cluster"]
            dispatcher = CeleryDispatcher(
                self.services,
                codec,
                send_task=task_sender(celery or celery_app(config), cluster["queue"]),
                front=self.role == "serve",
                token=telegram["token"],
                lock_seconds=cluster["chat_lock_seconds"],
                sweep_seconds=cluster["sweep_seconds"],
                **albums,
            )
        self.dispatcher = dispatcher
        self.intake = Intake(self.services, bot, codec, handler, dispatcher)
        if telegram["mode"] == "webhook" and self.role != "worker":
            self.webhook = WebhookEndpoint(
                webhook_secret(telegram),
                source_networks=telegram["webhook_source_networks"],
                max_body=min(telegram["webhook_max_body_kb"] * 1024, self.web.max_body),
                metrics=self.metrics,
                receive=self.intake.receive,
            )
            self.web.route(telegram["webhook_path"], self.webhook.handle, methods=["POST"], name="telegram-webhook")
            self.web.ready_check("webhook", self.webhook.ready)

    def _counter(self, query: Any) -> Callable[[], Awaitable[int]]:
        """A gauge reader: ``SELECT COUNT(*) …`` in the database's thread (0 while its table does not exist)."""

        def count() -> int:
            try:
                return int(self.services.store.execute(query)[0][0])
            except (OperationalError, ProgrammingError):  # e.g. no intake table: the console does not journal
                return 0

        return lambda: self.services.run_db(count)

    async def _config_loaded(self) -> None:
        if not self.config:
            raise RuntimeError("no configuration")

    async def _store_answers(self) -> None:
        await self.services.run_db(self.services.store.execute, "SELECT 1")

    async def _state_answers(self) -> None:
        await self.services.state.get(keys.READY_PROBE)

    def start(self) -> None:
        """Start the outbox, the plugins (they must return at once) and the web server (when configured: a port in
        use is a :class:`ConfigError` before any plugin starts)."""
        self.web.bind()
        self.services.outbox.start()  # resumes what earlier runs left queued
        self.plugins.startup(self.services)
        self._started = True
        self.web.start()

    def stop(self) -> None:
        """Stop the web server, the plugins, and release threads and the database."""
        self.web.stop()  # stops listening now; `await app.web.closed()` waits for requests in progress
        if self._started:
            self._started = False
            try:
                self.plugins.shutdown(self.services)
            finally:
                self.services.close()
