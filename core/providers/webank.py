"""WeBank / Tencent Cloud FaceID (人脸核身) client, H5 flow: tokens, tickets, signatures, launch and result.

A plain synchronous, thread-safe library class, usable from a script without the bot::

    client = WebankClient(app_id, secret)
    face = client.get_face_id(order_no, name, id_no, user_id)            # identity goes to WeBank
    url = client.h5_login_url(face, user_id, callback_url)              # the page the user opens
    ...                                                                  # the browser comes back to callback_url
    record = client.query_result(order_no)                               # the outcome, server to server

The protocol is the "WeBank / Tencent Cloud FaceID" section of PROVIDERS.md:

- **access token** (``/api/oauth2/access_token``, lives 7200 s) and **SIGN ticket** (``/api/oauth2/api_ticket``
  ``type=SIGN``, derived from the token) are held by the :class:`~core.infra.tokens.TokenService`: renewed ahead
  every ``renew_minutes`` (20), one fetch however many threads ask, the SIGN ticket refetched whenever the
  token changes, and the replaced SIGN ticket kept ``keep_previous`` seconds (60) so that an incoming
  signature made with it is still accepted (:meth:`WebankClient.verify_callback`);
- a **NONCE ticket** (``type=NONCE``, bound to the ``userId``, single use, 120 s) is fetched for every launch
  URL and never cached;
- **signature** (:func:`sign`): the parameter values plus the ticket, sorted, concatenated, SHA-1, upper-case hex.

Every answer carries ``code`` (``"0"``: success) and ``msg``. Transport failures (connection errors, timeouts,
5xx, a non-JSON body) are retried by :mod:`core.infra.http` and then raise :class:`TemporarilyUnavailable`; a
refused access token request raises :class:`ProviderMisconfigured`; any other non-zero code raises
:class:`ProviderError` with WeBank's ``msg`` (the full error table is not public, so nothing else is retried);
all with ``vendor`` ``"webank"`` (:data:`ERRORS`). ``queryfacerecord`` is different: its non-zero codes *are*
outcomes, so :meth:`WebankClient.query_result` returns them in a :class:`FaceRecord` instead of raising.

Nothing secret reaches a log, an exception or a ``repr``: the app secret and every token and ticket are
registered with :func:`core.infra.redact.register_secret`; names and ID numbers are only ever in a request body.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from core.contract.errors import BadCallback, ProviderError, ProviderMisconfigured, TemporarilyUnavailable
from core.contract.fields import Field
from core.infra.http import HttpSettings, make_session
from core.infra.metrics import metered
from core.infra.redact import register_secret
from core.infra.tokens import TokenService, default_service
from core.providers.errors import Vendor

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://kyc1.qcloud.com"

#: What the client can do, for :func:`core.providers.choose_engine`.
CAPABILITIES = frozenset({"h5_verification"})

#: ``providers.webank`` in config.yaml.
SCHEMA = {
    "app_id": Field(str, default="", secret=True, help="WeBank / Tencent FaceID app id (WBappid)"),
    "secret": Field(str, default="", secret=True, help="WeBank / Tencent FaceID app secret"),
    "endpoint": Field(str, default=DEFAULT_ENDPOINT, url=True, help="API base URL (older: kyc.qcloud.com)"),
    "renew_minutes": Field(float, default=20, min=1, max=110, help="renew the access token this often"),
    "keep_previous_seconds": Field(
        float, default=60, min=0, max=600, help="accept the previous SIGN ticket this long after a renewal"
    ),
}
VERSION = "1.0.0"
TOKEN_PATH = "/api/oauth2/access_token"
TICKET_PATH = "/api/oauth2/api_ticket"
FACE_ID_PATH = "/api/server/getAdvFaceId"
LOGIN_PATH = "/api/web/login"
QUERY_PATH = "/api/v2/base/queryfacerecord"
#: Lifetimes when an answer omits ``expire_in`` (PROVIDERS.md).
TOKEN_LIFETIME = 7200.0
SIGN_TICKET_LIFETIME = 3600.0
#: Browser-side failure codes of the H5 page (PROVIDERS.md).
BROWSER_CODES = {
    "3001": "no video recording",
    "3002": "missing login state",
    "3003": "interrupted",
    "3004": "no camera permission",
    "3005": "unsupported mode",
}
_ALNUM = string.ascii_letters + string.digits
_ORDER_NO = re.compile(r"[A-Za-z0-9]{1,32}")
_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


# -- errors --------------------------------------------------------------------------------------------


#: WeBank's failures (``vendor`` ``"webank"``). Its full error table is not public: a refusal is a
#: :class:`ProviderError` with WeBank's ``msg`` in the detail, except where the client knows better.
ERRORS = Vendor("webank", "WeBank")


# -- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceId:
    """``getAdvFaceId``'s answer: what the launch URL needs."""

    order_no: str
    face_id: str = field(repr=False)
    optimal_domain: str
    biz_seq_no: str | None = None


@dataclass(frozen=True)
class FaceRecord:
    """``queryfacerecord``'s answer. ``passed`` is WeBank's verdict (``code == "0"``: the same person, live).

    ``has_record`` tells whether the answer carried a verification record (``result`` with scores or a time):
    a non-zero code without one is a refusal of the query, not an outcome. Photo and video are never kept.
    """

    order_no: str
    code: str
    msg: str
    similarity: float | None
    live_rate: float | None
    occurred_time: str | None
    has_record: bool

    @property
    def passed(self) -> bool:
        """WeBank verified the same person, live."""
        return self.code == "0"


@dataclass(frozen=True)
class Callback:
    """A checked browser callback. Only a hint: the outcome comes from :meth:`WebankClient.query_result`."""

    order_no: str
    code: str
    live_rate: float | None
    signed: bool

    @property
    def face_check_passed(self) -> bool:
        """The page said the face check passed (``code`` 0)."""
        return self.code == "0"


# -- signatures ------------------------------------------------------------------------------------------


def sign(values: Iterable[Any], ticket: str) -> str:
    """WeBank's signature: ``values`` plus ``ticket``, sorted, concatenated, SHA-1 (UTF-8), upper-case hex.

    Parameter *names* play no part. A ``None`` value is a bug and raises :class:`ValueError`.
    """
    items = list(values)
    if not ticket or any(v is None for v in items):
        raise ValueError("every signed value and the ticket must be given")
    items = sorted([str(v) for v in items] + [ticket])
    return hashlib.sha1("".join(items).encode("utf-8")).hexdigest().upper()


def same_signature(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures, ignoring the case of the hex digits."""
    return hmac.compare_digest(a.strip().upper().encode(), b.strip().upper().encode())


def new_nonce() -> str:
    """32 random alphanumeric characters (``nonce``)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(32))


def new_order_no(prefix: str = "") -> str:
    """A fresh unique ``orderNo``: ``prefix`` plus random alphanumerics, 32 characters in all."""
    if not re.fullmatch(r"[A-Za-z0-9]{0,8}", prefix):
        raise ValueError("prefix: at most 8 alphanumeric characters")
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(32 - len(prefix)))


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# -- the client --------------------------------------------------------------------------------------------


class WebankClient:
    """WeBank FaceID H5 client: see the module docstring. Thread-safe; create one and share it."""

    def __init__(
        self,
        app_id: str,
        secret: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        renew_minutes: float = 20,
        keep_previous: float = 60,
        http: HttpSettings | None = None,
        tokens: TokenService | None = None,
    ) -> None:
        if not app_id or not secret:
            raise ValueError("WebankClient needs an app id and a secret")
        if renew_minutes <= 0:
            raise ValueError("renew_minutes must be > 0")
        register_secret(secret)
        self.app_id = app_id
        self._secret = secret
        self.endpoint = endpoint.rstrip("/")
        self.http = http or HttpSettings()
        self.renew_every = float(renew_minutes) * 60
        self.tokens = tokens or default_service()
        self.metrics = self.tokens.metrics  # the bot's metrics come with its token service
        base = f"webank:{_fingerprint(self.endpoint, app_id, secret)}"
        self.token_key = f"{base}:access_token"
        self.sign_key = f"{base}:sign_ticket"
        self.tokens.register(
            self.token_key, self._fetch_token, renew_every=self.renew_every, keep_previous=keep_previous
        )
        self.tokens.register(
            self.sign_key,
            self._fetch_sign_ticket,
            refresh_margin=60,
            keep_previous=keep_previous,
            parent=self.token_key,
        )
        self._session = make_session(self.http)

    @classmethod
    def from_config(cls, config: dict[str, Any], tokens: TokenService | None = None) -> WebankClient | None:
        """A client from the whole validated config (``providers.webank``, ``http``, ``workers.io``).

        ``None`` when the app id or the secret is empty (the feature is off, not broken).
        """
        section = (config.get("providers") or {}).get("webank") or {}
        if not section.get("app_id") or not section.get("secret"):
            return None
        return cls(
            section["app_id"],
            section["secret"],
            section.get("endpoint") or DEFAULT_ENDPOINT,
            renew_minutes=float(section.get("renew_minutes") or 20),
            keep_previous=float(section.get("keep_previous_seconds", 60)),
            http=HttpSettings.from_config(config),
            tokens=tokens,
        )

    def __repr__(self) -> str:
        return f"WebankClient(endpoint={self.endpoint!r}, renew every {self.renew_every:g} s)"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # -- tokens and tickets ---------------------------------------------------------------------------

    def access_token(self) -> str:
        """The current access token (from the token service)."""
        return self.tokens.get(self.token_key)

    def sign_ticket(self) -> str:
        """The current SIGN ticket (from the token service; refetched with each new access token)."""
        return self.tokens.get(self.sign_key)

    def sign_tickets(self) -> list[str]:
        """SIGN tickets an incoming signature may be made with: the current one and, for about a minute
        after a renewal, the previous one."""
        current = self.sign_ticket()
        previous = self.tokens.previous(self.sign_key)
        return [current] + ([previous] if previous and previous != current else [])

    def nonce_ticket(self, user_id: str) -> str:
        """A fresh NONCE ticket for ``user_id`` (single use, 120 s). Never cached: one request per call."""
        _check_user_id(user_id)
        body = self._get(
            TICKET_PATH,
            "NONCE ticket",
            {
                "app_id": self.app_id,
                "access_token": self.access_token(),
                "type": "NONCE",
                "version": VERSION,
                "user_id": user_id,
            },
        )
        value, _ = _ticket_of(body, "NONCE ticket")
        register_secret(value)
        return value

    def _fetch_token(self) -> tuple[str, float]:
        """Token source: ``(access_token, expire_in)``; :class:`ProviderMisconfigured` when refused."""
        params = {"app_id": self.app_id, "secret": self._secret, "grant_type": "client_credential", "version": VERSION}
        body = self._get(TOKEN_PATH, "access token", params, refused=ProviderMisconfigured)
        token = body.get("access_token")
        if not token:
            raise ERRORS.error(
                TemporarilyUnavailable, "WeBank access token: answer without access_token", code="no_result"
            )
        register_secret(str(token))
        return str(token), _float(body.get("expire_in")) or TOKEN_LIFETIME

    def _fetch_sign_ticket(self) -> tuple[str, float]:
        """SIGN ticket source (derived from the access token): ``(value, expire_in)``."""
        params = {"app_id": self.app_id, "access_token": self.access_token(), "type": "SIGN", "version": VERSION}
        body = self._get(TICKET_PATH, "SIGN ticket", params)
        value, lifetime = _ticket_of(body, "SIGN ticket")
        register_secret(value)
        return value, lifetime or SIGN_TICKET_LIFETIME

    # -- the flow -------------------------------------------------------------------------------------

    def get_face_id(self, order_no: str, name: str, id_no: str, user_id: str) -> FaceId:
        """``getAdvFaceId``: upload the identity the face is checked against; the ``faceId`` of the launch.

        ``order_no``: ≤ 32 alphanumerics, unique per verification. ``user_id`` must be the one used for the
        launch URL. ``name`` and ``id_no`` go into the request body only.
        """
        _check_order_no(order_no)
        _check_user_id(user_id)
        if not name or not id_no:
            raise ValueError("get_face_id needs a name and an ID number")
        payload = self._signed(order_no, user_id, name=name, idNo=id_no, userId=user_id)
        body = self._post(FACE_ID_PATH, "getAdvFaceId", order_no, payload)
        result = body.get("result") or {}
        face_id = result.get("faceId")
        if not face_id:
            raise ERRORS.error(
                TemporarilyUnavailable, "WeBank getAdvFaceId: answer without result.faceId", code="no_result"
            )
        domain = str(result.get("optimalDomain") or urlsplit(self.endpoint).netloc)
        if not _HOST.fullmatch(domain):
            raise ERRORS.error(
                TemporarilyUnavailable, "WeBank getAdvFaceId: optimalDomain is not a host name", code="bad_domain"
            )
        register_secret(str(face_id))
        return FaceId(order_no, str(face_id), domain, body.get("bizSeqNo") or result.get("bizSeqNo"))

    def h5_login_url(self, face: FaceId, user_id: str, callback_url: str, *, redirect_type: int = 1) -> str:
        """The H5 page the user opens (``/api/web/login`` on ``optimalDomain``), signed with a fresh NONCE ticket.

        Single use: the NONCE ticket behind it works once. ``callback_url`` (absolute http(s)) is where the
        browser goes when the check ends, with ``code``, ``orderNo``, ``newSignature``… appended.
        """
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("callback_url must be an absolute http(s) URL")
        _check_user_id(user_id)
        ticket = self.nonce_ticket(user_id)
        nonce = new_nonce()
        signature = sign([self.app_id, user_id, face.order_no, VERSION, face.face_id, nonce], ticket)
        query = {
            "appId": self.app_id,
            "version": VERSION,
            "nonce": nonce,
            "orderNo": face.order_no,
            "faceId": face.face_id,
            "url": callback_url,
            "from": "browser",
            "userId": user_id,
            "sign": signature,
            "redirectType": str(redirect_type),
        }
        scheme = urlsplit(self.endpoint).scheme or "https"  # https in production; the fakes serve http
        return f"{scheme}://{face.optimal_domain}{LOGIN_PATH}?{urlencode(query, quote_via=quote)}"

    def verify_callback(
        self, params: Mapping[str, Any], *, order_no: str | None = None, require_signature: bool = True
    ) -> Callback:
        """Check the query parameters the browser brought back to the callback URL.

        ``newSignature`` (or ``newSign``) must be the signature of ``appId``, ``orderNo``, ``code`` with the
        current SIGN ticket or, about a minute after a renewal, the previous one. ``order_no``: the order this
        callback must be about. Without a signature the callback is refused unless ``require_signature`` is
        false (it is then returned with ``signed=False``). Raises :class:`BadCallback`.
        Only a hint either way: decide the outcome with :meth:`query_result`.
        """
        got_order = str(params.get("orderNo") or "")
        code = str(params.get("code") or "")
        if not got_order or not code:
            raise ERRORS.error(BadCallback, "WeBank callback without orderNo or code", code="incomplete")
        if order_no is not None and not hmac.compare_digest(got_order.encode(), order_no.encode()):
            raise ERRORS.error(BadCallback, "WeBank callback for another order", code="wrong_order")
        signature = str(params.get("newSignature") or params.get("newSign") or "")
        signed = False
        if signature:
            expected = [sign([self.app_id, got_order, code], t) for t in self.sign_tickets()]
            if not any(same_signature(signature, e) for e in expected):
                raise ERRORS.error(BadCallback, "WeBank callback with a wrong signature", code="bad_signature")
            signed = True
        elif require_signature:
            raise ERRORS.error(BadCallback, "WeBank callback without a signature", code="unsigned")
        log.info("WeBank callback for order %s: code %s (%s)", got_order[:6], code, "signed" if signed else "unsigned")
        return Callback(got_order, code, _float(params.get("liveRate")), signed)

    def query_result(self, order_no: str) -> FaceRecord:
        """``queryfacerecord``: the outcome of ``order_no`` (kept 3 days by WeBank). Photo and video not asked for.

        Returns a :class:`FaceRecord` for any answer with a ``code`` (non-zero codes are outcomes or "no record");
        raises only for transport failures.
        """
        _check_order_no(order_no)
        body = self._post(QUERY_PATH, "queryfacerecord", order_no, self._signed(order_no, order_no), outcome=True)
        result = body.get("result")
        result = result if isinstance(result, dict) else {}
        record = FaceRecord(
            order_no=order_no,
            code=str(body.get("code")),
            msg=str(body.get("msg") or ""),
            similarity=_float(result.get("similarity")),
            live_rate=_float(result.get("liveRate")),
            occurred_time=str(result["occurredTime"]) if result.get("occurredTime") else None,
            has_record=any(result.get(k) not in (None, "") for k in ("similarity", "liveRate", "occurredTime")),
        )
        return record

    # -- internals ------------------------------------------------------------------------------------

    def _signed(self, order_no: str, signed: str, **fields: str) -> dict[str, Any]:
        """A request body signed with the SIGN ticket: ``appId``, ``orderNo``, ``version``, a fresh ``nonce`` and
        ``fields``, and ``sign`` over the app id, ``signed`` (the ``userId``, or the ``orderNo``), the version and
        the nonce."""
        nonce = new_nonce()
        signature = sign([self.app_id, signed, VERSION, nonce], self.sign_ticket())
        return {
            "appId": self.app_id,
            "orderNo": order_no,
            "version": VERSION,
            "nonce": nonce,
            **fields,
            "sign": signature,
        }

    def _get(
        self, path: str, what: str, params: dict[str, str], *, refused: type[ProviderError] = ProviderError
    ) -> dict[str, Any]:
        body = self._send("GET", path, what, params=params)
        code = str(body.get("code"))
        if code != "0":
            hint = (
                ": check providers.webank.app_id and providers.webank.secret"
                if refused is ProviderMisconfigured
                else ""
            )
            raise ERRORS.error(refused, f"WeBank {what}: code {code} ({body.get('msg') or 'no msg'}){hint}", code=code)
        return body

    def _post(
        self, path: str, what: str, order_no: str, payload: dict[str, Any], *, outcome: bool = False
    ) -> dict[str, Any]:
        body = self._send("POST", path, what, params={"orderNo": order_no}, json=payload)
        code = str(body.get("code"))
        if code != "0" and not outcome:
            raise ERRORS.error(ProviderError, f"WeBank {what}: code {code} ({body.get('msg') or 'no msg'})", code=code)
        return body

    @metered("webank", code=lambda body: body.get("code"))
    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        """One request (with the transport retries of core.infra.http): the JSON answer, or a typed error."""
        try:
            response = self._session.request(method, self.endpoint + path, **kwargs)
        except requests.RequestException as exc:
            raise ERRORS.unanswered(exc, what, endpoint=self.endpoint, retries=self.http.retries) from None
        if response.status_code >= 500:
            raise ERRORS.unreadable(response.status_code, what, endpoint=self.endpoint, expected="a JSON answer")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "code" not in body:
            raise ERRORS.unreadable(response.status_code, what, endpoint=self.endpoint, expected="a JSON answer")
        return body


def _ticket_of(body: dict[str, Any], what: str) -> tuple[str, float | None]:
    tickets = body.get("tickets")
    first = tickets[0] if isinstance(tickets, list) and tickets and isinstance(tickets[0], dict) else {}
    value = first.get("value")
    if not value:
        raise ERRORS.error(TemporarilyUnavailable, f"WeBank {what}: answer without tickets[0].value", code="no_result")
    return str(value), _float(first.get("expire_in", body.get("expire_in")))


def _check_order_no(order_no: str) -> None:
    if not _ORDER_NO.fullmatch(order_no or ""):
        raise ValueError("orderNo: 1 to 32 alphanumeric characters")


def _check_user_id(user_id: str) -> None:
    if not _USER_ID.fullmatch(user_id or ""):
        raise ValueError("userId: 1 to 64 characters of [A-Za-z0-9_-]")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
