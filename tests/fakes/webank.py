"""A fake WeBank / Tencent Cloud FaceID server (H5 flow) for tests: real HTTP on 127.0.0.1, port 0.

It speaks the protocol of the "WeBank / Tencent Cloud FaceID" section of PROVIDERS.md::

    server = FakeWebank().start()
    client = WebankClient(server.app_id, server.secret, server.endpoint)
    ...
    server.stop()

In pytest, use the ``fake_webank`` fixture (a started server, stopped afterwards).

Paths
    ``GET /api/oauth2/access_token``: checks ``app_id``, ``secret``, ``grant_type=client_credential`` and
    ``version``; a token lives ``token_lifetime`` (7200 s). Issuing a new token cuts every older token (and
    its SIGN ticket) to ``overlap`` (60 s) more, as WeBank does.
    ``GET /api/oauth2/api_ticket``: ``type=SIGN`` (one ticket per access token, ``sign_lifetime`` 3600 s) or
    ``type=NONCE`` with ``user_id`` (a new ticket every time, ``nonce_lifetime`` 120 s, single use).
    ``POST /api/server/getAdvFaceId?orderNo=``: JSON; every field checked (``orderNo`` ≤ 32 alphanumerics,
    unique and equal to the query's, ``nonce`` 32 alphanumerics, ``version``), ``sign`` over ``appId``,
    ``userId``, ``version``, ``nonce`` with a valid SIGN ticket. Answers ``faceId`` and ``optimalDomain``
    (this server's ``127.0.0.1:<port>``).
    ``GET /api/web/login``: the H5 page. ``sign`` over ``appId``, ``userId``, ``orderNo``, ``version``,
    ``faceId``, ``nonce`` with an unused, unexpired NONCE ticket issued for that ``userId``, which is then
    used up (a launch URL works once); ``faceId`` and ``userId`` must be the order's, ``url`` absolute.
    ``POST /api/v2/base/queryfacerecord?orderNo=``: ``sign`` over ``appId``, ``orderNo``, ``version``,
    ``nonce`` with a valid SIGN ticket. A finished order answers ``code`` "0" (passed) or
    :data:`FAILED_CODE` with ``result {liveRate, similarity, occurredTime}``; before that
    :data:`NO_RECORD_CODE` without ``result``.

Any wrong signature, token or parameter is refused with a non-zero ``code`` (:data:`CODES`). WeBank's full
error table is not public, so these codes are the fake's own; the client and the provider must not depend
on their values, only on "0" versus not "0" and on whether a record came with it.

Test controls: :meth:`FakeWebank.finish` (the user completed the page: passed or failed, with scores; returns
the callback URL the browser is sent to, signed as WeBank signs it), ``latency``, ``clock`` (share a fake
clock with the client's token service), :meth:`FakeWebank.count` per path, :attr:`FakeWebank.token_issued_at`,
:meth:`FakeWebank.ticket_fetches` and :attr:`FakeWebank.refused` (why each refused request was refused).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.fakes.server import ProviderFake, json_bytes, running

TOKEN_PATH = "/api/oauth2/access_token"
TICKET_PATH = "/api/oauth2/api_ticket"
FACE_ID_PATH = "/api/server/getAdvFaceId"
LOGIN_PATH = "/api/web/login"
QUERY_PATH = "/api/v2/base/queryfacerecord"
VERSION = "1.0.0"
#: The fake's own codes (WeBank's table is not public).
CODES = {
    "credentials": ("400101", "app_id or secret is wrong"),
    "token": ("400102", "access_token is invalid or expired"),
    "sign": ("400103", "sign check failed"),
    "param": ("400104", "parameter error"),
    "duplicate": ("400105", "orderNo already used"),
    "nonce": ("400107", "NONCE ticket invalid, expired or used"),
}
NO_RECORD_CODE = "400106"
FAILED_CODE = "66660015"
_ALNUM32 = re.compile(r"[A-Za-z0-9]{32}")
_ORDER = re.compile(r"[A-Za-z0-9]{1,32}")


def webank_sign(values: list[str], ticket: str) -> str:
    """The documented signature, written independently of the client's: sorted values + ticket, SHA-1, upper hex."""
    return hashlib.sha1("".join(sorted([*values, ticket])).encode("utf-8")).hexdigest().upper()


class Refused(Exception):
    """A request the fake refuses: ``reason`` is a key of :data:`CODES`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass
class _Token:
    value: str
    issued_at: float
    expires_at: float
    sign_ticket: str | None = None
    sign_expires_at: float = 0.0


@dataclass
class _Nonce:
    user_id: str
    expires_at: float
    used: bool = False


@dataclass
class Order:
    """One ``getAdvFaceId`` order: what arrived, and how the user's check ended (set by the test)."""

    order_no: str
    face_id: str
    user_id: str
    name: str
    id_no: str
    status: str = "created"  # created → opened → passed | failed | norecord
    callback_url: str | None = None
    similarity: float | None = None
    live_rate: float | None = None
    failure_code: str = ""


class FakeWebank(ProviderFake):
    """The fake server; see the module docstring. Thread-safe."""

    name = "fake-webank"
    provider = "webank"

    def __init__(
        self,
        *,
        app_id: str = "IDAfake0001",
        secret: str = "fake-webank-secret-0123456789abcdef",
        clock: Callable[[], float] = time.monotonic,
        token_lifetime: float = 7200,
        sign_lifetime: float = 3600,
        nonce_lifetime: float = 120,
        overlap: float = 60,
        latency: float = 0.0,
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.secret = secret
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.sign_lifetime = sign_lifetime
        self.nonce_lifetime = nonce_lifetime
        self.overlap = overlap
        self.latency = latency
        self.orders: dict[str, Order] = {}
        self.token_issued_at: list[float] = []
        self.refused: list[tuple[str, str]] = []  # (path, reason)
        self._tokens: dict[str, _Token] = {}
        self._nonces: dict[str, _Nonce] = {}
        self._tickets: Counter = Counter()

    # -- life cycle --------------------------------------------------------------------------------

    def provider_config(self, **overrides: Any) -> dict[str, Any]:
        """A ``providers.webank`` config section pointing at this server."""
        return {"app_id": self.app_id, "secret": self.secret, "endpoint": self.endpoint, **overrides}

    # -- test controls and counters ------------------------------------------------------------------

    @property
    def token_fetches(self) -> int:
        """Access tokens issued."""
        with self._lock:
            return len(self.token_issued_at)

    def ticket_fetches(self, kind: str) -> int:
        """Tickets of ``kind`` (``SIGN`` or ``NONCE``) handed out."""
        with self._lock:
            return self._tickets[kind]

    def api_calls(self) -> int:
        """Every request received."""
        with self._lock:
            return sum(self._counts.values())

    def current_sign_ticket(self) -> str:
        """The SIGN ticket of the newest token (issued on demand, as a client's ``api_ticket`` call would)."""
        with self._lock:
            token = max(self._tokens.values(), key=lambda t: t.issued_at, default=None)
            assert token is not None, "no access token was issued yet"
            return self._sign_ticket_of(token, count=False)

    def valid_sign_tickets(self) -> list[str]:
        """Every SIGN ticket a signature may be made with right now."""
        with self._lock:
            return self._valid_sign_tickets()

    def finish(
        self,
        order_no: str,
        *,
        passed: bool = True,
        similarity: float | None = None,
        live_rate: float | None = None,
        code: str | None = None,
        record: bool = True,
        failure_code: str = "",
    ) -> str:
        """The user completed the H5 page (which must have been opened). Returns the callback URL the page sends
        the browser to, with ``code``, ``orderNo``, ``h5faceId``, ``newSignature`` and ``liveRate``.

        ``record=False`` (with ``passed=False``): the attempt ended without a record WeBank keeps (abandoned,
        refused by risk control): ``queryfacerecord`` answers ``failure_code`` (default :data:`FAILED_CODE`)
        and no ``result``, and the callback carries that code too."""
        signing = self.current_sign_ticket()
        with self._lock:
            order = self.orders[order_no]
            assert order.status == "opened", f"order {order_no} was {order.status}, not opened on the phone"
            order.status = "passed" if passed else ("failed" if record else "norecord")
            order.failure_code = failure_code or FAILED_CODE
            order.similarity = similarity if similarity is not None else (95.25 if passed else 31.0)
            order.live_rate = live_rate if live_rate is not None else (99.0 if passed else 12.0)
            callback_code = code or ("0" if passed else ("3003" if record else order.failure_code))
            params = {
                "code": callback_code,
                "orderNo": order_no,
                "h5faceId": order.face_id,
                "newSignature": webank_sign([self.app_id, order_no, callback_code], signing),
                "liveRate": f"{order.live_rate:g}",
            }
            url = order.callback_url or ""
        return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"

    # -- state (lock held) ----------------------------------------------------------------------------

    def _valid_token(self, value: str) -> _Token:
        token = self._tokens.get(value or "")
        if token is None or self.clock() >= token.expires_at:
            raise Refused("token", "unknown or expired access_token")
        return token

    def _sign_ticket_of(self, token: _Token, *, count: bool = True) -> str:
        if token.sign_ticket is None:
            token.sign_ticket = "S" + secrets.token_urlsafe(48)
            token.sign_expires_at = min(token.expires_at, token.issued_at + self.sign_lifetime)
        if count:
            self._tickets["SIGN"] += 1
        return token.sign_ticket

    def _valid_sign_tickets(self) -> list[str]:
        now = self.clock()
        return [
            t.sign_ticket
            for t in self._tokens.values()
            if t.sign_ticket is not None and now < t.expires_at and now < t.sign_expires_at
        ]

    def _check_sign(self, values: list[str], given: str) -> None:
        if not given or not any(webank_sign(values, t) == given for t in self._valid_sign_tickets()):
            raise Refused("sign", "no valid SIGN ticket gives this signature")

    # -- requests ---------------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str = ""
    ) -> tuple[int, str, bytes]:
        """One request: ``(status, content type, body)``."""
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self._counts[path] += 1
            try:
                if path == TOKEN_PATH and method == "GET":
                    return _ok(self._token(query))
                if path == TICKET_PATH and method == "GET":
                    return _ok(self._ticket(query))
                if path == FACE_ID_PATH and method == "POST":
                    return _ok(self._face_id(query, _json_body(body)))
                if path == QUERY_PATH and method == "POST":
                    return _ok(self._query(query, _json_body(body)))
                if path == LOGIN_PATH and method == "GET":
                    order = self._login(query)
                    page = f"<html><body>fake FaceID page for order {order.order_no}</body></html>"
                    return 200, "text/html; charset=utf-8", page.encode()
            except Refused as err:
                self.refused.append((path, err.reason))
                code, msg = CODES[err.reason]
                status = 400 if path == LOGIN_PATH else 200
                return status, "application/json", json_bytes({"code": code, "msg": f"{msg} ({err.detail})"})
        return 404, "text/html", b"<html>404 Not Found</html>"

    def _token(self, q: dict[str, str]) -> dict[str, Any]:
        if q.get("grant_type") != "client_credential" or q.get("version") != VERSION:
            raise Refused("param", "grant_type/version")
        if q.get("app_id") != self.app_id or q.get("secret") != self.secret:
            raise Refused("credentials")
        now = self.clock()
        for old in self._tokens.values():  # the old tokens (and their tickets) stay valid about a minute
            old.expires_at = min(old.expires_at, now + self.overlap)
        value = "T" + secrets.token_urlsafe(24)
        self._tokens[value] = _Token(value, now, now + self.token_lifetime)
        self.token_issued_at.append(now)
        return {"access_token": value, "expire_time": "", "expire_in": f"{self.token_lifetime:g}"}

    def _ticket(self, q: dict[str, str]) -> dict[str, Any]:
        if q.get("app_id") != self.app_id or q.get("version") != VERSION:
            raise Refused("param", "app_id/version")
        token = self._valid_token(q.get("access_token", ""))
        if q.get("type") == "SIGN":
            value = self._sign_ticket_of(token)
            left = token.sign_expires_at - self.clock()
        elif q.get("type") == "NONCE":
            user_id = q.get("user_id") or ""
            if not user_id:
                raise Refused("param", "user_id")
            value = "N" + secrets.token_urlsafe(48)
            self._nonces[value] = _Nonce(user_id, self.clock() + self.nonce_lifetime)
            self._tickets["NONCE"] += 1
            left = self.nonce_lifetime
        else:
            raise Refused("param", "type")
        return {"tickets": [{"value": value, "expire_in": f"{max(1, int(left))}", "expire_time": ""}]}

    def _common(self, q: dict[str, str], data: dict[str, Any]) -> str:
        order_no = str(data.get("orderNo") or "")
        if data.get("appId") != self.app_id or data.get("version") != VERSION:
            raise Refused("param", "appId/version")
        if not _ORDER.fullmatch(order_no) or q.get("orderNo") != order_no:
            raise Refused("param", "orderNo")
        if not _ALNUM32.fullmatch(str(data.get("nonce") or "")):
            raise Refused("param", "nonce")
        return order_no

    def _face_id(self, q: dict[str, str], data: dict[str, Any]) -> dict[str, Any]:
        order_no = self._common(q, data)
        user_id = str(data.get("userId") or "")
        if not user_id or not data.get("name") or not data.get("idNo"):
            raise Refused("param", "userId/name/idNo")
        self._check_sign([self.app_id, user_id, VERSION, str(data["nonce"])], str(data.get("sign") or ""))
        if order_no in self.orders:
            raise Refused("duplicate", order_no)
        face_id = "F" + secrets.token_hex(15)
        self.orders[order_no] = Order(order_no, face_id, user_id, str(data["name"]), str(data["idNo"]))
        biz = secrets.token_hex(10)
        result = {"bizSeqNo": biz, "orderNo": order_no, "faceId": face_id, "optimalDomain": self.host, "success": True}
        return {"bizSeqNo": biz, "result": result, "transactionTime": "20240101120000"}

    def _login(self, q: dict[str, str]) -> Order:
        order = self.orders.get(q.get("orderNo") or "")
        if order is None or q.get("faceId") != order.face_id or q.get("userId") != order.user_id:
            raise Refused("param", "orderNo/faceId/userId")
        if q.get("appId") != self.app_id or q.get("version") != VERSION or q.get("from") != "browser":
            raise Refused("param", "appId/version/from")
        url = urlsplit(q.get("url") or "")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise Refused("param", "url")
        if not _ALNUM32.fullmatch(q.get("nonce") or ""):
            raise Refused("param", "nonce")
        values = [self.app_id, order.user_id, order.order_no, VERSION, order.face_id, q["nonce"]]
        now = self.clock()
        for value, nonce in self._nonces.items():
            if webank_sign(values, value) == q.get("sign"):
                if nonce.used or now >= nonce.expires_at or nonce.user_id != order.user_id:
                    raise Refused("nonce", "used, expired or for another user")
                nonce.used = True
                break
        else:
            raise Refused("sign", "no NONCE ticket gives this signature")
        order.status = "opened" if order.status == "created" else order.status
        order.callback_url = q["url"]
        return order

    def _query(self, q: dict[str, str], data: dict[str, Any]) -> dict[str, Any]:
        order_no = self._common(q, data)
        self._check_sign([self.app_id, order_no, VERSION, str(data["nonce"])], str(data.get("sign") or ""))
        order = self.orders.get(order_no)
        if order is not None and order.status == "norecord":
            return {"code": order.failure_code, "msg": "核身未通过"}
        if order is None or order.status not in ("passed", "failed"):
            return {"code": NO_RECORD_CODE, "msg": "no record for this orderNo (yet)"}
        result = {
            "orderNo": order_no,
            "liveRate": f"{order.live_rate:g}",
            "similarity": f"{order.similarity:g}",
            "occurredTime": "20240101120500",
            "photo": "",
            "video": "",
        }
        if order.status == "passed":
            return {"code": "0", "msg": "请求成功", "result": result}
        return {"code": order.failure_code, "msg": "比对相似度未达到通过标准", "result": result}


def _ok(body: dict[str, Any]) -> tuple[int, str, bytes]:
    body.setdefault("code", "0")
    body.setdefault("msg", "请求成功")
    return 200, "application/json", json_bytes(body)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise Refused("param", "body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused("param", "body is not a JSON object")
    return data


@pytest.fixture
def fake_webank() -> Iterator[FakeWebank]:
    """A started :class:`FakeWebank` (real clock, no latency), stopped after the test."""
    yield from running(FakeWebank())
