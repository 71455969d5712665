"""The bot's Prometheus metrics: one :class:`Metrics` per bot, with its own ``CollectorRegistry``.

Every metric the bot exports is defined here, in one place, and recorded through the methods below, so a
caller never touches ``prometheus_client`` and two bots in one process (or two tests) never share a count.
The bot's :class:`Metrics` is ``services.metrics`` (``app.metrics``); ``GET /metrics`` (:mod:`core.infra.web`)
serves it. Library objects used without a bot (a script's ``BaiduClient``) record into :data:`STANDALONE`,
which nothing serves.

What records what:

- the transport: :meth:`Metrics.update_received`, :meth:`Metrics.reply_sent`, :meth:`Metrics.telegram_error`,
  :meth:`Metrics.webhook_request`;
- the router: :meth:`Metrics.command_handled`, :meth:`Metrics.conversation_step`;
- provider clients: :func:`metered` on their one request function (calls, latency, error codes), and
  :meth:`Metrics.qps_wait` after the rate limiter;
- the token service: :meth:`Metrics.token_fetch`;
- values read at scrape time (outbox and intake depth, verification sessions by state): the owning module
  registers a function with :meth:`Metrics.gauge`.

Label values are bounded (command names, provider API names, error codes), never user ids or texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, Union

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: Seconds a scrape waits for one gauge function (``Metrics.gauge``) before leaving that gauge out.
GAUGE_TIMEOUT = 2.0
#: Provider request latency buckets (seconds): OCR and face calls take 0.1–3 s, faceprint calls less.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GaugeValue = Union[float, Mapping[Any, float]]  # noqa: UP007 (a runtime alias on Python 3.10)
GaugeReader = Callable[[], Union[GaugeValue, Awaitable[GaugeValue]]]  # noqa: UP007


def _slug(text: str) -> str:
    """A label value from a human name: ``"OCR general_basic"`` → ``ocr_general_basic``."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "unknown"


def _code(code: Any) -> str:
    """An error code as a label: ``ok`` for none (None, 0, "0"), else its text."""
    return "ok" if code in (None, 0, "0", "") else str(code)[:40]


_FINGERPRINT = re.compile(r"^[0-9a-f]{12,}$")


def token_label(key: str) -> str:
    """A token-service key without its credential fingerprint: ``baidu:3f2a…`` → ``baidu``,
    ``webank:3f2a…:sign_ticket`` → ``webank:sign_ticket``."""
    return ":".join(part for part in key.split(":") if not _FINGERPRINT.match(part)) or "token"


class _Call:
    """One provider request being timed; set :attr:`code` to the provider's error code (None: success)."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code: Any = None


class _ScrapeGauges:
    """A collector of gauges whose values come from functions read when ``/metrics`` is scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[str, tuple[str, tuple[str, ...], GaugeReader]] = {}
        self._values: dict[str, GaugeValue] = {}
        self._failing: set[str] = set()

    def add(self, name: str, documentation: str, read: GaugeReader, labels: Sequence[str]) -> None:
        with self._lock:
            if name in self._gauges:
                raise ValueError(f"gauge {name} is already registered")
            self._gauges[name] = (documentation, tuple(labels), read)

    async def refresh(self) -> None:
        """Read every gauge function (awaiting the asynchronous ones, each for at most GAUGE_TIMEOUT s)."""
        with self._lock:
            gauges = dict(self._gauges)
        for name, (_, _, read) in gauges.items():
            try:
                value = read()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, GAUGE_TIMEOUT)
            except Exception as exc:
                if name not in self._failing:
                    log.warning("metrics: gauge %s could not be read (%s)", name, type(exc).__name__)
                self._failing.add(name)
                self._values.pop(name, None)
                continue
            self._failing.discard(name)
            self._values[name] = value

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # the gauges are known only at scrape time; nothing to check for clashes up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            gauges = dict(self._gauges)
        for name, (documentation, labels, _) in gauges.items():
            if name not in self._values:
                continue
            value = self._values[name]
            family = GaugeMetricFamily(name, documentation, labels=list(labels) if labels else None)
            if isinstance(value, Mapping):
                for key, number in value.items():
                    family.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))], float(number))
            else:
                family.add_metric([], float(value))
            yield family


class Metrics:
    """The bot's metrics (see the module docstring). Thread-safe: provider calls record from worker threads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.updates = Counter("aipbot_updates", "Updates received from Telegram, by kind", ["kind"], registry=r)
        self.replies = Counter("aipbot_replies_sent", "Messages sent, by Bot API method", ["method"], registry=r)
        self.telegram_errors = Counter(
            "aipbot_telegram_errors", "Bot API calls that failed, by error code", ["code"], registry=r
        )
        self.commands = Counter(
            "aipbot_commands", "Command handlers run, by command and outcome", ["command", "outcome"], registry=r
        )
        self.conversation_steps = Counter(
            "aipbot_conversation_steps", "Messages that continued a conversation, by command", ["command"], registry=r
        )
        self.provider_requests = Counter(
            "aipbot_provider_requests",
            "Provider API requests, by provider, API and error code (ok: success)",
            ["provider", "api", "code"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "aipbot_provider_request_seconds",
            "Provider API request latency, by provider and API",
            ["provider", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.qps_waits = Counter(
            "aipbot_qps_waits", "Requests that waited for the client-side rate limiter", ["provider"], registry=r
        )
        self.qps_wait_seconds = Counter(
            "aipbot_qps_wait_seconds", "Seconds waited for the client-side rate limiter", ["provider"], registry=r
        )
        self.token_fetches = Counter(
            "aipbot_token_fetches", "Token service fetches, by token and outcome", ["token", "outcome"], registry=r
        )
        self.webhook_requests = Counter(
            "aipbot_webhook_requests",
            "Requests to the Telegram webhook, by outcome (recorded, duplicate, refused, bad_request, error…)",
            ["outcome"],
            registry=r,
        )
        self._gauges = _ScrapeGauges()
        r.register(self._gauges)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # -- the transport ----------------------------------------------------------------------------------
    def update_received(self, kind: str) -> None:
        """One update arrived (``message``, ``edited_message``, ``callback_query``, …: the Update field set)."""
        self.updates.labels(_slug(kind)).inc()

    def reply_sent(self, method: str = "sendMessage") -> None:
        """One message was sent (``sendMessage``, ``sendPhoto``, ``sendDocument``, ``editMessageText``…)."""
        self.replies.labels(method).inc()

    def telegram_error(self, code: int | str) -> None:
        """A Bot API call failed: the HTTP/Bot API error code (400, 403, 429, 502…) or a kind (``network``,
        ``timeout``)."""
        self.telegram_errors.labels(_code(code)).inc()

    def webhook_request(self, outcome: str) -> None:
        """A request reached the webhook: ``recorded`` (a new update journaled), ``duplicate`` (an ``update_id``
        seen before), ``unauthorized`` / ``forbidden`` (secret missing / wrong), ``not_telegram`` (source
        network), ``bad_request``, ``out_of_range`` (an ``update_id`` Telegram never sends: answered 200, dropped),
        ``too_large``, ``not_ready``, ``error`` (the journal could not record it)."""
        self.webhook_requests.labels(_slug(outcome)).inc()

    # -- the router -------------------------------------------------------------------------------------
    def command_handled(self, command: str, outcome: str) -> None:
        """A command's handler (or button or deep-link handler) ran: ``outcome`` is ``ok``, ``user_error``
        (a ``UserFacingError`` the user was told) or ``error`` (anything else)."""
        self.commands.labels(command, outcome).inc()

    def conversation_step(self, command: str) -> None:
        """A photo or text continued ``command``'s conversation."""
        self.conversation_steps.labels(command).inc()

    # -- providers and tokens ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def provider_call(self, provider: str, api: str) -> Iterator[_Call]:
        """Time one provider request; set ``.code`` on the yielded object to the provider's error code (an
        exception's ``code`` attribute, or its type name, is recorded when the block raises)."""
        call = _Call()
        started = time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.code = getattr(exc, "code", None) or type(exc).__name__
            raise
        finally:
            api = _slug(api)
            self.provider_latency.labels(provider, api).observe(time.perf_counter() - started)
            self.provider_requests.labels(provider, api, _code(call.code)).inc()

    def qps_wait(self, provider: str, seconds: float) -> float:
        """The rate limiter made a request wait ``seconds`` (0: no wait, not counted); returns ``seconds``."""
        if seconds > 0:
            self.qps_waits.labels(provider).inc()
            self.qps_wait_seconds.labels(provider).inc(seconds)
        return seconds

    def token_fetch(self, key: str, outcome: str) -> None:
        """The token service fetched ``key`` (``ok``/``error``); the key's fingerprint is not a label."""
        self.token_fetches.labels(token_label(key), outcome).inc()

    # -- values read at scrape time -----------------------------------------------------------------------
    def gauge(self, name: str, documentation: str, read: GaugeReader, *, labels: Sequence[str] = ()) -> None:
        """Export ``name`` with the value ``read()`` gives at each scrape: a number, or (with ``labels``) a
        mapping ``{label value or tuple of label values: number}``; ``read`` may be ``async`` (awaited, at
        most :data:`GAUGE_TIMEOUT` s — use ``services.run_db`` for a database count, never block the loop).
        E.g. ``metrics.gauge("aipbot_outbox_depth", "Messages waiting to be sent", outbox.depth)``."""
        self._gauges.add(name, documentation, read, labels)

    # -- output -----------------------------------------------------------------------------------------
    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric (gauge functions read now)."""
        await self._gauges.refresh()
        return generate_latest(self.registry)


#: Metrics of library objects used without a bot (scripts, benchmarks): recorded, never served.
STANDALONE = Metrics()


def metrics_of(owner: Any) -> Metrics:
    """``owner.metrics`` when the bot gave it one (``BotServices`` does), else :data:`STANDALONE`."""
    return getattr(owner, "metrics", None) or STANDALONE


def metered(provider: str, code: Callable[[Any], Any] = lambda result: None) -> Callable[[F], F]:
    """Decorate a provider client's one request method ``(self, …, what, …)``: each call is timed and counted
    under ``api=what`` in ``self.metrics``; ``code(result)`` is the provider's error code in a returned answer
    (None: success), an exception's ``code`` attribute when it raises."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            what = signature.bind(self, *args, **kwargs).arguments.get("what", fn.__name__)
            with metrics_of(self).provider_call(provider, what) as call:
                result = fn(self, *args, **kwargs)
                call.code = code(result)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
