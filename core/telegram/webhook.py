"""The Telegram webhook: the endpoint Telegram POSTs updates to, and its checks.

In webhook mode (``telegram.mode: webhook``) the runtime registers :meth:`WebhookEndpoint.handle` on
the bot's web server at ``telegram.webhook_path`` (``POST`` only) and calls ``setWebhook`` with
``<server.public_url><webhook_path>`` and the secret token :func:`webhook_secret` gives. A request goes through,
in this order (each refusal a short plain-text answer; nothing of a refused request is parsed or recorded):

1. **source**: the client's address must be in ``telegram.webhook_source_networks`` (default Telegram's
   ``149.154.160.0/20`` and ``91.108.4.0/22``; ``[]``: any). The client is the TCP peer, unless the peer is in
   ``telegram.trusted_proxies``: then uvicorn's ``ProxyHeadersMiddleware`` (set up by :mod:`core.infra.web` for
   the whole server) reads ``X-Forwarded-For`` from the right, skipping trusted proxies, and the first address not
   trusted is the client. Else ``403``;
2. **secret**: ``X-Telegram-Bot-Api-Secret-Token`` compared in constant time (``hmac.compare_digest``): missing
   ``401``, wrong ``403``;
3. **size**: a body over ``telegram.webhook_max_body_kb`` (or the server's ``max_body_kb`` when smaller) ``413``;
4. **shape**: not a JSON object with an integer ``update_id`` ``400``; an ``update_id`` outside Telegram's range
   (negative, or :data:`MAX_UPDATE_ID` and above: the journal's 64-bit column could not hold it) is answered
   ``200`` and dropped with a log line, so Telegram does not deliver it again and again;
5. **recorded**: ``await intake.receive([update])`` journals the update (``INSERT OR IGNORE`` by ``update_id``:
   Telegram's redelivery of an update already recorded is answered ``200`` and handled once) and queues it in its
   chat's queue; only then ``200``. The handling happens after the answer. A journal that cannot write (database
   error) answers ``500``, so Telegram delivers again; a transport not yet started or stopping ``503``.

The secret is never logged: it is registered for redaction (as the bot token is), and when
``telegram.webhook_secret`` is empty it is derived from the bot token with HMAC-SHA256, so every process of one
bot computes the same value without storing it anywhere (:func:`derive_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Union

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core.infra.metrics import Metrics
from core.infra.redact import register_secret

log = logging.getLogger(__name__)

#: The header Telegram sends the ``secret_token`` of ``setWebhook`` in.
SECRET_HEADER = "x-telegram-bot-api-secret-token"
#: The message the derived secret is the HMAC of (keyed with the bot token); change the version to rotate it.
DERIVATION = b"aipbot telegram webhook secret v1"
#: Update ids are positive and below 2^63 (the journal's ``BIGINT``): anything else is not Telegram's.
MAX_UPDATE_ID = 2**63

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]  # noqa: UP007
#: ``receive([update])``: journal and queue; resolves once the update is committed (``Intake.receive``).
Receive = Callable[[list[dict[str, Any]]], Awaitable[int]]


def derive_secret(bot_token: str) -> str:
    """A webhook secret token from the bot token: HMAC-SHA256, URL-safe base64 without padding (43 characters of
    ``A-Za-z0-9_-``, as Telegram allows). The same token always gives the same secret; the secret does not reveal
    the token."""
    digest = hmac.new(bot_token.encode("utf-8"), DERIVATION, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def webhook_secret(telegram: dict[str, Any]) -> str:
    """The secret token of the ``telegram`` config section: ``webhook_secret``, or derived from ``token``;
    registered for log redaction either way."""
    secret = telegram.get("webhook_secret") or derive_secret(telegram["token"])
    register_secret(secret)
    return secret


def networks(values: Iterable[str]) -> list[Network]:
    """Parsed networks (``"149.154.160.0/20"``, ``"10.0.0.1"``); the config already checked them."""
    return [ipaddress.ip_network(value, strict=False) for value in values]


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:149.154.167.1 is that IPv4 address
    return mapped or address


def _within(address: Address, nets: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in nets)


def _text(status: int, text: str) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status)


class WebhookEndpoint:
    """The webhook's checks and its one endpoint, :meth:`handle` (see the module docstring).

    ``receive``: the callable that records an update (the intake's ``receive``); it is called only while the
    endpoint is open (:meth:`open`, :meth:`close`): before the bot started and once it is stopping, ``503``. The
    client address is the request's: behind ``telegram.trusted_proxies``, uvicorn's ``ProxyHeadersMiddleware``
    already put the forwarded client there.
    """

    def __init__(
        self,
        secret: str,
        *,
        source_networks: Sequence[str],
        max_body: int,
        metrics: Metrics,
        receive: Receive,
    ) -> None:
        self.secret = secret  # for setWebhook; never logged (registered for redaction by webhook_secret)
        self._secret = secret.encode("ascii")
        self.source_networks = networks(source_networks)
        self.max_body = max_body
        self.metrics = metrics
        self.receive = receive
        self.accepting = False
        self.registered = False  # whether Telegram took setWebhook (the runtime says so: mark_registered)

    def open(self) -> None:
        """From now on updates are recorded (before: ``503``)."""
        self.accepting = True

    def close(self) -> None:
        """From now on ``503``: Telegram delivers the update again, here or to another process."""
        self.accepting = False

    def mark_registered(self, registered: bool) -> None:
        """Whether Telegram took ``setWebhook`` for this endpoint (``/readyz`` reports it)."""
        self.registered = registered

    async def ready(self) -> None:
        """For ``/readyz``: the endpoint records updates and Telegram took ``setWebhook``."""
        if not self.accepting:
            raise RuntimeError("the webhook does not take updates (starting or stopping)")
        if not self.registered:
            raise RuntimeError("setWebhook has not succeeded")

    def __repr__(self) -> str:  # never the secret
        return f"WebhookEndpoint(sources={[str(n) for n in self.source_networks]}, max_body={self.max_body})"

    def _refuse(self, outcome: str, status: int, text: str) -> PlainTextResponse:
        self.metrics.webhook_request(outcome)
        return _text(status, text)

    async def handle(self, request: Request) -> Response:
        """``POST <webhook_path>``: check, record, answer (``200`` only once the update is journaled)."""
        if self.source_networks:
            client = _address(request.client.host if request.client else None)
            if client is None or not _within(client, self.source_networks):
                log.warning("webhook: refused a request from %s (not in telegram.webhook_source_networks)", client)
                return self._refuse("not_telegram", 403, "forbidden: not from Telegram's networks")
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return self._refuse("unauthorized", 401, "unauthorized: X-Telegram-Bot-Api-Secret-Token is missing")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._secret):
            log.warning("webhook: refused a request with a wrong secret token")
            return self._refuse("forbidden", 403, "forbidden: wrong X-Telegram-Bot-Api-Secret-Token")
        body = await self._body(request)
        if body is None:
            return self._refuse("too_large", 413, f"request body too large (limit {self.max_body // 1024} KB)")
        update, problem = parse_update(body)
        if update is None:
            return self._refuse("bad_request", 400, f"bad request: {problem}")
        if not 0 <= update["update_id"] < MAX_UPDATE_ID:
            log.warning("webhook: dropped an update whose update_id is outside Telegram's range (0 to 2^63-1)")
            self.metrics.webhook_request("out_of_range")
            return PlainTextResponse("ok\n")
        if not self.accepting:
            return self._refuse("not_ready", 503, "not ready: the bot is starting or stopping")
        try:
            new = await self.receive([update])
        except Exception as err:
            log.error("webhook: could not record update %s (%s: %s)", update["update_id"], type(err).__name__, err)
            return self._refuse("error", 500, "internal error: the update was not recorded")
        self.metrics.webhook_request("recorded" if new else "duplicate")
        return PlainTextResponse("ok\n")

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None when it is over :attr:`max_body` (from ``Content-Length``, or while it is read)."""
        length = request.headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > self.max_body:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def parse_update(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """``(update, "")`` for a JSON object with an integer ``update_id``, else ``(None, why)`` in a few words."""
    try:
        update = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: [[[[…]]]]
        return None, "the body is not JSON"
    if not isinstance(update, dict):
        return None, "the body is not a JSON object"
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None, "no integer update_id"
    return update, ""
