"""The bot's web server: one Starlette app served by uvicorn inside the bot's own asyncio loop.

Off unless config.yaml has a ``server:`` section (without ``enabled: false``). Then the bot listens on
``server.listen``:``server.port`` and answers:

- ``GET /healthz``: ``200 ok`` while the process answers;
- ``GET /readyz``: ``200`` with a JSON body when every readiness check passes (the config is loaded, the
  store answers ``SELECT 1``, the state store answers a read, the Bot API answered ``getMe`` within
  ``server.ready_cache`` seconds); ``503`` with the same JSON body naming what is not ready otherwise;
- ``GET /metrics``: the Prometheus text exposition of :mod:`core.infra.metrics`, to a request carrying
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
string — a matched route's template, so no reference or token in a path — status, milliseconds, client address)
goes through the bot's logging; uvicorn's own access log is off. There are no redirects (a trailing slash is a
404: Starlette would build the redirect from the ``Host`` header).

Limits (``server.read_timeout``, ``keep_alive``, ``max_connections``, ``max_header_kb``): uvicorn's own settings
where it has them, and :mod:`core.infra.web_guard` for a whole request's deadline and the connection cap. With
``telegram.trusted_proxies`` set, uvicorn's ``ProxyHeadersMiddleware`` makes a trusted proxy's request the
forwarded client's (:func:`trusted_hosts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.contract.fields import ConfigError
from core.infra.metrics import Metrics
from core.infra.readiness import CHECK_TIMEOUT, Check, Readiness
from core.infra.web_guard import guarded_protocol

log = logging.getLogger(__name__)
access_log = logging.getLogger("aipbot.web.access")

#: Paths the server answers itself; a registered route may not take them.
CORE_PATHS = ("/healthz", "/readyz", "/metrics")
#: Probe paths logged at DEBUG (a load balancer asks every few seconds), everything else at INFO.
QUIET_PATHS = frozenset(CORE_PATHS)
#: Seconds a scrape of /metrics waits for the readiness checks (the gauge aipbot_ready; under GAUGE_TIMEOUT).
READY_GAUGE_WAIT = 1.5
#: Seconds the stop waits for requests in progress before it cancels them.
STOP_TIMEOUT = 5.0
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
#: Path segments this long are masked in the access log when no route matched (a reference, a token).
LONG_SEGMENT = 16

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
            log.info("web: %s %s: the client disconnected", scope.get("method"), _logged_path(scope))
        except Exception:
            log.exception("web: %s %s failed", scope.get("method"), _logged_path(scope))
            if status is None:
                with contextlib.suppress(Exception):
                    await _text(500)(scope, receive, sending)
        finally:
            path = _logged_path(scope)
            client = (scope.get("client") or ("-", 0))[0]
            level = logging.DEBUG if scope.get("path") in QUIET_PATHS else logging.INFO
            ms = (time.perf_counter() - started) * 1000
            access_log.log(level, "%s %s %s %.1f ms %s", scope.get("method"), path, status or "-", ms, client)


def _logged_path(scope: Scope) -> str:
    """The path for the access log: a matched route's own template (``/verify/return/{ref}``: a reference, a token
    in the path is never logged), else the path with every segment of 16 characters or more masked (``…``)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str) and scope.get("path_params"):
        return template
    segments = _path(scope).split("/")
    return "/".join("…" if len(part) >= LONG_SEGMENT else part for part in segments)


def trusted_hosts(proxies: Sequence[str]) -> list[str]:
    """uvicorn's ``ProxyHeadersMiddleware`` trusted hosts for ``telegram.trusted_proxies``: each network, and for an
    IPv4 one its IPv4-mapped IPv6 form too (a dual-stack socket shows an IPv4 proxy as ``::ffff:127.0.0.1``)."""
    hosts = []
    for value in proxies:
        net = ipaddress.ip_network(value, strict=False)
        hosts.append(str(net))
        if net.version == 4:
            hosts.append(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    return hosts


@dataclass(frozen=True)
class Limits:
    """The ``server:`` section's connection limits (see :mod:`core.infra.web_guard`)."""

    read_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 200
    max_header_kb: int = 16

    @classmethod
    def of(cls, section: dict[str, Any]) -> Limits:
        defaults = cls()
        return cls(
            read_timeout=float(section.get("read_timeout", defaults.read_timeout)),
            keep_alive=float(section.get("keep_alive", defaults.keep_alive)),
            max_connections=int(section.get("max_connections", defaults.max_connections)),
            max_header_kb=int(section.get("max_header_kb", defaults.max_header_kb)),
        )


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

    def __init__(self, section: dict[str, Any] | None, metrics: Metrics, trusted_proxies: Sequence[str] = ()) -> None:
        section = section or {"enabled": False}
        self.enabled: bool = bool(section.get("enabled", True))
        self.listen: str = section.get("listen", "127.0.0.1")
        self.port: int = section.get("port", 8080)
        self.public_url: str = (section.get("public_url") or "").rstrip("/")
        self.metrics_token: str = section.get("metrics_token") or ""
        self.max_body: int = int(section.get("max_body_kb", 1024)) * 1024
        self.ready_cache: float = float(section.get("ready_cache", 5.0))
        self.limits = Limits.of(section)
        self.trusted_proxies: list[str] = list(trusted_proxies)
        self.metrics = metrics
        self.readiness = Readiness()
        metrics.gauge("aipbot_ready", "1 while a check of /readyz passes, by check", self._ready, labels=["check"])
        self._owners: dict[str, str] = dict.fromkeys(CORE_PATHS, "core")
        self.asgi = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ],
            middleware=[*self._proxy_layer(), Middleware(_BodyLimit, limit=self.max_body)],
            exception_handlers={HTTPException: self._http_error, Exception: self._internal_error},
        )
        self.asgi.router.redirect_slashes = False  # a redirect would be built from the Host header: 404 instead
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def _proxy_layer(self) -> list[Middleware]:
        """uvicorn's ``ProxyHeadersMiddleware`` for ``telegram.trusted_proxies`` (none without): a request from a
        trusted proxy gets the client its ``X-Forwarded-For`` names (the right-most address that is not a trusted
        proxy) — for the webhook's source check, the ``/metrics`` loopback rule and the access log alike."""
        if not self.trusted_proxies:
            return []
        return [Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_hosts(self.trusted_proxies))]  # type: ignore[arg-type]

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

    def start(self) -> None:
        """Start serving in the running event loop (from ``App.start``); binds first if :meth:`bind` was not called."""
        if not self.enabled or self._task is not None:
            return
        self.bind()
        limits = self.limits
        config = uvicorn.Config(
            _Guard(self.asgi), interface="asgi3", ws="none", lifespan="off", log_config=None,
            http=guarded_protocol(limits.read_timeout, limits.max_connections),
            access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=STOP_TIMEOUT,
            timeout_keep_alive=limits.keep_alive, h11_max_incomplete_event_size=limits.max_header_kb * 1024,
            backlog=max(128, limits.max_connections),
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
