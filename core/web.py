"""The bot's web server: one Starlette app served by uvicorn inside the bot's own asyncio loop.

Off unless config.yaml has a ``server:`` section (without ``enabled: false``). Then the bot listens on
``server.listen``:``server.port`` and answers:

- ``GET /healthz``: ``200 ok`` while the process answers;
- ``GET /readyz``: ``200`` with a JSON body when every readiness check passes (the config is loaded, the
  store answers ``SELECT 1``, the state store answers a read, the Bot API answered ``getMe`` within
  ``server.ready_cache`` seconds); ``503`` with the same JSON body naming what is not ready otherwise;
- ``GET /metrics``: the Prometheus text exposition of :mod:`core.metrics`, to a request carrying
  ``Authorization: Bearer <server.metrics_token>`` when a token is set, else only to 127.0.0.1 / ::1;
- whatever core modules and plugins registered (see below).

**Routes are registered, not written here.** One registry, :class:`WebServer` (``services.web``):

- core modules (the Telegram webhook) call ``services.web.route("/telegram/webhook", endpoint,
  methods=["POST"])`` (or ``services.web.add(starlette_route)``) before or after the server starts;
- plugins declare theirs with the hook ``aipbot_web_routes(config, services)`` returning Starlette routes
  (``Route("/verify/return/{ref}", self.on_return)``); the plugin manager adds them under the plugin's name.

Two registrations of one path stop start-up with a message naming both owners. Endpoints are Starlette
endpoints (``async def endpoint(request) -> Response``); plugins may import ``starlette``, never ``telegram``.

Every request gets a clear short answer: unknown path 404, wrong method 405 (with ``Allow``), a body over
``server.max_body_kb`` 413, an endpoint that raises 500 ``internal error`` (the traceback goes to the log,
redacted, never to the client). The access log (logger ``aipbot.web.access``: method, path without the query
string, status, milliseconds, client address) goes through the bot's logging; uvicorn's own access log is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import ConfigError
from core.metrics import Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("aipbot.web.access")

#: Paths the server answers itself; a registered route may not take them.
CORE_PATHS = ("/healthz", "/readyz", "/metrics")
#: Probe paths logged at DEBUG (a load balancer asks every few seconds), everything else at INFO.
QUIET_PATHS = frozenset(CORE_PATHS)
#: Seconds a scrape of /metrics waits for the readiness checks (the gauge aipbot_ready; under GAUGE_TIMEOUT).
READY_GAUGE_WAIT = 1.5
#: Seconds one readiness check may take before it counts as not ready.
CHECK_TIMEOUT = 3.0
#: Seconds the stop waits for requests in progress before it cancels them.
STOP_TIMEOUT = 5.0
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})

Check = Callable[[], Awaitable[Any]]
TEXTS = {
    400: "bad request",
    401: "unauthorized: send Authorization: Bearer <server.metrics_token>",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    500: "internal error",
}


def _text(status: int, text: str | None = None, headers: dict[str, str] | None = None) -> PlainTextResponse:
    return PlainTextResponse((text or TEXTS.get(status, "error")) + "\n", status_code=status, headers=headers)


# -- readiness -----------------------------------------------------------------------------------------------


class _Check:
    """One readiness check: its last outcome is reused for ``cache`` seconds; concurrent askers share one run."""

    def __init__(self, check: Check, cache: float, timeout: float) -> None:
        self.check, self.cache, self.timeout = check, cache, timeout
        self.result: str | None = None
        self.at = 0.0
        self.running: asyncio.Task[str] | None = None

    async def run(self) -> str:
        if self.result is not None and time.monotonic() - self.at < self.cache:
            return self.result
        if self.running is None:
            self.running = asyncio.ensure_future(self._once())
        return await asyncio.shield(self.running)

    async def _once(self) -> str:
        try:
            await asyncio.wait_for(self.check(), self.timeout)
            result = "ok"
        except asyncio.TimeoutError:
            result = "timeout"
        except Exception as exc:
            result = f"error: {type(exc).__name__}"
        self.result, self.at, self.running = result, time.monotonic(), None
        return result


class Readiness:
    """Named asynchronous checks; ready when every one completes without raising within its timeout."""

    def __init__(self) -> None:
        self.checks: dict[str, _Check] = {}
        self._last: dict[str, str] = {}

    def add(self, name: str, check: Check, *, cache: float = 0.0, timeout: float = CHECK_TIMEOUT) -> None:
        """``await check()`` must return (anything) when ``name`` is ready and raise when it is not; its
        outcome is reused for ``cache`` seconds (for checks that cost a network call)."""
        self.checks[name] = _Check(check, cache, timeout)

    async def run(self) -> dict[str, str]:
        """``{name: "ok" | "timeout" | "error: <type>"}`` for every check, run concurrently."""
        names = list(self.checks)
        results = await asyncio.gather(*(self.checks[n].run() for n in names))
        outcome = dict(zip(names, results, strict=True))
        for name, result in outcome.items():  # log changes only: probes ask every few seconds
            if result != self._last.get(name, "ok"):
                (log.info if result == "ok" else log.warning)("readiness: %s is %s", name, result)
        self._last = outcome
        return outcome


# -- ASGI layers ---------------------------------------------------------------------------------------------


class _BodyLimit:
    """413 for a request body over ``limit`` bytes: at once from ``Content-Length``, else while it is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            await _text(413, f"request body too large (limit {self.limit // 1024} KB)")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body too large (limit {self.limit // 1024} KB)")
            return message

        await self.app(scope, limited, send)


class _Guard:
    """The outermost layer: an exception never reaches uvicorn (nor a traceback the client), and each request
    is logged once: method, path (never the query string: it may carry a token), status, time, client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan, no websockets
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        except ClientDisconnect:  # the client went away while sending its body: nothing to answer
            log.info("web: %s %s: the client disconnected", scope.get("method"), _path(scope))
        except Exception:
            log.exception("web: %s %s failed", scope.get("method"), _path(scope))
            if status is None:
                with contextlib.suppress(Exception):
                    await _text(500)(scope, receive, sending)
        finally:
            path = _path(scope)
            client = (scope.get("client") or ("-", 0))[0]
            level = logging.DEBUG if scope.get("path") in QUIET_PATHS else logging.INFO
            ms = (time.perf_counter() - started) * 1000
            access_log.log(level, "%s %s %s %.1f ms %s", scope.get("method"), path, status or "-", ms, client)


def _path(scope: Scope) -> str:
    """The request path as sent (percent-encoded, no query string), shortened, safe to log."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "backslashreplace")
    text = raw.split(b"?", 1)[0].decode("ascii", "backslashreplace")
    return text if len(text) <= 200 else text[:200] + "…"


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the bot owns SIGINT/SIGTERM and stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


# -- the server ----------------------------------------------------------------------------------------------


class WebServer:
    """The route registry and the server (``services.web``); see the module docstring."""

    def __init__(self, section: dict[str, Any] | None, services: Any, metrics: Metrics) -> None:
        section = section or {"enabled": False}
        self.enabled: bool = bool(section.get("enabled", True))
        self.listen: str = section.get("listen", "127.0.0.1")
        self.port: int = section.get("port", 8080)
        self.public_url: str = (section.get("public_url") or "").rstrip("/")
        self.metrics_token: str = section.get("metrics_token") or ""
        self.max_body: int = int(section.get("max_body_kb", 1024)) * 1024
        self.ready_cache: float = float(section.get("ready_cache", 5.0))
        self.services = services
        self.metrics = metrics
        self.readiness = Readiness()
        self.readiness.add("config", self._config_loaded)
        self.readiness.add("store", self._store_answers)
        self.readiness.add("state", self._state_answers)
        metrics.gauge("aipbot_ready", "1 while a check of /readyz passes, by check", self._ready, labels=["check"])
        self._owners: dict[str, str] = dict.fromkeys(CORE_PATHS, "core")
        self.asgi = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ],
            middleware=[Middleware(_BodyLimit, limit=self.max_body)],
            exception_handlers={HTTPException: self._http_error, Exception: self._internal_error},
        )
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the registry ---------------------------------------------------------------------------------------
    def route(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]], *, methods: Sequence[str] = ("GET",),
        name: str | None = None, owner: str = "core",
    ) -> None:  # fmt: skip
        """Serve ``endpoint`` at ``path`` (Starlette syntax: ``/verify/return/{ref}``) for ``methods``."""
        self.add(Route(path, endpoint, methods=list(methods), name=name), owner=owner)

    def add(self, route: BaseRoute, *, owner: str = "core") -> None:
        """Serve a Starlette route (``Route``, ``Mount``); ``owner`` names who added it in a clash message."""
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"web route of {owner}", f"needs a path starting with / (got {path!r})")
        if path in self._owners:
            raise ConfigError(f"web route {path}", f"registered by {self._owners[path]} and by {owner}")
        self._owners[path] = owner
        self.asgi.router.routes.append(route)

    def url(self, path: str) -> str:
        """The public URL of ``path`` (``server.public_url`` + path); ValueError when no public URL is set."""
        if not self.public_url:
            raise ValueError("server.public_url is not set")
        return self.public_url + (path if path.startswith("/") else "/" + path)

    def ready_check(self, name: str, check: Check, *, cache: float = 0.0, timeout: float = CHECK_TIMEOUT) -> None:
        """Add a readiness check for ``/readyz`` (see :meth:`Readiness.add`): transports and plugins add theirs."""
        self.readiness.add(name, check, cache=cache, timeout=timeout)

    # -- life cycle -----------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Open the listening socket now (when enabled): a port in use or an address this machine does not have
        is a :class:`ConfigError`, so the bot stops at start-up with one line."""
        if not self.enabled or self._socket is not None:
            return
        try:
            infos = socket.getaddrinfo(self.listen, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as err:
            raise ConfigError("server.listen", f"cannot resolve {self.listen!r} ({err.strerror})") from None
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections linger
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            where = "server.port" if err.errno in (errno.EADDRINUSE, errno.EACCES) else "server.listen"
            reason = "the port is already in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
            raise ConfigError(where, f"cannot listen on {self.listen}:{self.port} ({reason})") from None
        self._socket = sock
        self.port = sock.getsockname()[1]  # the port chosen when server.port is 0

    def start(self, transport: Any = None) -> None:
        """Start serving in the running event loop (from ``App.start``); binds first if :meth:`bind` was not called."""
        if not self.enabled or self._task is not None:
            return
        self.bind()
        check = _transport_check(transport)
        if check is not None:
            self.readiness.add("telegram", check, cache=self.ready_cache)
        config = uvicorn.Config(
            _Guard(self.asgi), interface="asgi3", http="h11", ws="none", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=STOP_TIMEOUT,
        )  # fmt: skip
        self._server = _Server(config)
        assert self._socket is not None
        self._task = asyncio.get_running_loop().create_task(self._serve(self._server, self._socket), name="aipbot-web")
        log.info(
            "web server listening on http://%s:%d (public URL: %s)", self.listen, self.port, self.public_url or "none"
        )

    @staticmethod
    async def _serve(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit:  # uvicorn exits on a start-up failure; the socket is already bound, so unlikely
            log.error("web server could not start")

    def stop(self) -> None:
        """Stop listening at once (the port is free when this returns) and let requests in progress finish on
        the loop's next turns; :meth:`closed` waits for that. Safe to call more than once."""
        server, sock = self._server, self._socket
        self._socket = None
        if server is not None:
            server.should_exit = True
            for listener in getattr(server, "servers", []):
                listener.close()
            for connection in list(server.server_state.connections):
                connection.shutdown()
            if not server.started and self._task is not None:
                self._task.cancel()
        if sock is not None:
            sock.close()

    async def closed(self) -> None:
        """Wait (at most ``STOP_TIMEOUT`` + 1 s) until the server task ended after :meth:`stop`."""
        task, self._task = self._task, None
        if task is None:
            return
        self.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT + 1)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- the core endpoints ---------------------------------------------------------------------------------
    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def _readyz(self, request: Request) -> Response:
        checks = await self.readiness.run()
        not_ready = [name for name, result in checks.items() if result != "ok"]
        body = {"ready": not not_ready, "not_ready": not_ready, "checks": checks}
        return Response(json.dumps(body) + "\n", status_code=503 if not_ready else 200, media_type="application/json")

    async def _metrics(self, request: Request) -> Response:
        if self.metrics_token:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {self.metrics_token}"
            if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
                return _text(401, headers={"WWW-Authenticate": "Bearer"})
        elif (request.client.host if request.client else "") not in LOOPBACK:
            return _text(403, "forbidden: /metrics answers only this machine unless server.metrics_token is set")
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if exc.status_code == 413 else None
        return _text(exc.status_code, detail, dict(exc.headers or {}))

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        return _text(500)  # the exception goes on to _Guard, which logs it once

    # -- readiness checks -----------------------------------------------------------------------------------
    async def _ready(self) -> dict[str, float]:
        """The gauge ``aipbot_ready``: the checks of ``/readyz``, run now; one still running after
        :data:`READY_GAUGE_WAIT` counts as failing in this scrape (it goes on, and its outcome is cached)."""
        runs = {name: asyncio.ensure_future(check.run()) for name, check in self.readiness.checks.items()}
        done, _ = await asyncio.wait(runs.values(), timeout=READY_GAUGE_WAIT) if runs else (set(), set())
        return {name: float(run in done and run.result() == "ok") for name, run in runs.items()}

    async def _config_loaded(self) -> None:
        if not self.services.config:
            raise RuntimeError("no configuration")

    async def _store_answers(self) -> None:
        await self.services.run_db(self.services.store.execute, "SELECT 1")

    async def _state_answers(self) -> None:
        await self.services.state.get("ready:probe")


def _transport_check(transport: Any) -> Check | None:
    """How to ask the transport whether its far end answers: its ``ping()`` when it has one, else ``getMe``
    through a python-telegram-bot ``Application`` (``transport.application.bot``); None for the console."""
    ping = getattr(transport, "ping", None)
    if callable(ping):
        return ping  # type: ignore[no-any-return]
    bot = getattr(getattr(transport, "application", None), "bot", None)
    if bot is None or not hasattr(bot, "get_me"):
        return None

    async def get_me() -> None:
        await bot.get_me(read_timeout=CHECK_TIMEOUT, connect_timeout=CHECK_TIMEOUT)

    return get_me
