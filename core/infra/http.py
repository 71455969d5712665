"""One place that builds HTTP sessions: pooling, timeouts, bounded retries, TLS and log redaction.

Every provider client gets its :class:`requests.Session` from :func:`make_session`:

- **pooling**: keep-alive connections, ``pool_size`` per host (the bot's ``workers.io``, so every
  worker thread can hold a connection);
- **timeouts**: every request without an explicit ``timeout=`` gets ``(connect_timeout, read_timeout)``;
- **retries**: connection errors, read timeouts and HTTP 500/502/503/504 are retried ``retries``
  times on every method (provider calls are safe to repeat), waiting ``backoff`` seconds before the
  first retry and doubling each time (capped at :data:`MAX_BACKOFF`; ``Retry-After`` is not obeyed,
  so a delay is always bounded). When retries run out, a 5xx response is returned as it is and a
  network failure raises :class:`requests.RequestException`; TLS errors are never retried;
- **TLS**: certificate verification stays on (``verify=True``);
- **logs**: :class:`core.infra.redact.RedactingFilter` is attached to the ``urllib3`` and ``requests``
  loggers, whose DEBUG records contain request URLs such as ``…?access_token=…``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core.infra.redact import RedactingFilter

#: HTTP statuses retried.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: The longest wait between two retries, in seconds.
MAX_BACKOFF = 30.0
#: Loggers whose records may carry URLs or bodies, redacted at the source (before any handler).
REDACTED_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts (seconds), retries and pool size for one session."""

    connect_timeout: float = 5
    read_timeout: float = 30
    retries: int = 2
    backoff: float = 0.5
    pool_size: int = 8

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HttpSettings:
        """Settings from the whole validated config: its ``http`` section, ``workers.io`` as the pool size."""
        http = config.get("http") or {}
        workers = config.get("workers") or {}
        defaults = cls()
        return cls(
            connect_timeout=float(http.get("connect_timeout", defaults.connect_timeout)),
            read_timeout=float(http.get("read_timeout", defaults.read_timeout)),
            retries=int(http.get("retries", defaults.retries)),
            backoff=float(http.get("backoff", defaults.backoff)),
            pool_size=int(workers.get("io", defaults.pool_size)),
        )

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` as requests takes it."""
        return (self.connect_timeout, self.read_timeout)

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): ``backoff``, doubled each time, capped."""
        return min(MAX_BACKOFF, self.backoff * 2 ** max(0, attempt - 1))


class _Retry(Retry):
    """urllib3's Retry with "first retry waits ``backoff``" (urllib3 2 retries the first time at once)."""

    def get_backoff_time(self) -> float:
        consecutive = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        if consecutive == 0 or self.backoff_factor == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (consecutive - 1)))


class Session(requests.Session):
    """A :class:`requests.Session` whose requests default to the settings' ``(connect, read)`` timeouts."""

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__()
        self.settings = settings

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send a request; ``timeout`` defaults to ``settings.timeout``."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.settings.timeout
        return super().request(method, url, *args, **kwargs)


def install_log_redaction() -> None:
    """Attach :class:`RedactingFilter` to the ``urllib3``/``requests`` loggers (idempotent).

    A logger's own filters run before its records propagate, so every handler (and pytest's caplog)
    sees the redacted text.
    """
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def make_retry(settings: HttpSettings) -> Retry:
    """The urllib3 retry policy described in the module docstring."""
    return _Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        redirect=3,
        backoff_factor=settings.backoff,
        backoff_max=MAX_BACKOFF,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=False,
    )


def make_session(settings: HttpSettings | None = None) -> Session:
    """A pooled keep-alive session with timeouts, bounded retries with backoff, TLS verification on."""
    settings = settings or HttpSettings()
    install_log_redaction()
    session = Session(settings)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, settings.pool_size), max_retries=make_retry(settings))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = True
    return session
