"""A fake Tencent Cloud FaceID (API 3.0) server for tests: real HTTP on 127.0.0.1, port 0.

It speaks the protocol of the "Tencent Cloud FaceID, API 3.0" section of PROVIDERS.md::

    server = FakeTencent().start()
    client = TencentFaceId(server.secret_id, server.secret_key, endpoint=server.endpoint)

In pytest, use the ``fake_tencent`` fixture (a started server, stopped afterwards).

Every request is ``POST /`` with a JSON body and the headers ``Content-Type`` (``application/json``),
``Host``, ``X-TC-Action``, ``X-TC-Timestamp``, ``X-TC-Version`` (``2018-03-01``), ``X-TC-Region`` and
``Authorization: TC3-HMAC-SHA256 Credential=<SecretId>/<date>/faceid/tc3_request, SignedHeaders=content-type;host,
Signature=<hex>``. The fake recomputes the signature from what it received (its own implementation, written
from Tencent's "签名方法 v3" page, not the client's) and refuses, as Tencent does, with HTTP 200 and
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``:

- ``AuthFailure.SignatureExpire``: ``X-TC-Timestamp`` more than 300 s from the fake's ``clock``;
- ``AuthFailure.SecretIdNotFound``: an unknown SecretId; ``AuthFailure.SignatureFailure``: a wrong signature,
  a wrong scope (date, service) or signed headers other than ``content-type;host``;
- ``AuthFailure.InvalidAuthorization``: no or a malformed ``Authorization``;
- ``InvalidAction``, ``NoSuchVersion``, ``InvalidParameter.MissingParameter``, ``InvalidParameterValue``.

Actions
    ``GetLiveCode`` → ``LiveCode`` (4 random digits; the fake remembers each code ``code_lifetime`` s).
    ``LivenessRecognition`` (``IdCard``, ``Name``, ``VideoBase64``, ``LivenessType`` LIP|ACTION|SILENT,
    ``ValidateData``): base64 over 8 MB → ``FailedOperation.LipSizeError``; not base64, or not an mp4 / avi / flv
    container → ``FailedOperation.VideoDecodeFailed``; an ID number the fake does not know →
    ``FailedOperation.IdNoExistSystem``, with another name → ``FailedOperation.IdNameMisMatch``; then what
    :meth:`FakeTencent.set_video` said the video shows (by its SHA-256: our client sends the bytes as they
    came): no face, several faces, poor light, not live, a code read that is not ``ValidateData`` (or a
    ``ValidateData`` the fake never issued or that expired) → ``FailedOperation.LipVoiceRecognize``, another
    person (``Sim`` 21 → ``FailedOperation.CompareLowSimilarity``), else ``Result: "Success"``, ``Sim``
    (``same_sim``), ``Description`` and a small JPEG ``BestFrameBase64``. An unregistered video shows no face.

Test controls: :meth:`add_person`, :meth:`set_video`, :meth:`inject` (the next N requests of an action answer an
error code, an HTTP status, garbage or stall), ``latency``, ``clock``, :meth:`count` per action,
:attr:`refused` (codes of refused requests), :attr:`seen` (the non-secret fields of each recognised request),
:attr:`timings` (when the fake began and finished each ``LivenessRecognition``: its share of a note's time).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import io
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from tests.fakes.server import LocalServer, Request

VERSION = "2018-03-01"
ACTIONS = ("GetLiveCode", "LivenessRecognition")
MAX_VIDEO_BASE64 = 8 * 1024 * 1024
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass
class Video:
    """What a registered video shows."""

    person: str | None  # None: no face
    says: str = ""  # the digits read aloud
    faces: int = 1
    live: bool = True
    dark: bool = False


@dataclass
class _Fault:
    action: str
    remaining: int
    code: str | None = None
    http_status: int | None = None
    garbage: bool = False
    stall: float = 0.0


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def expected_signature(secret_key: str, request: Request, date: str, timestamp: str, service: str) -> str:
    """The TC3-HMAC-SHA256 signature of ``request`` as Tencent's "签名方法 v3" page computes it."""
    canonical_headers = (
        f"content-type:{request.headers.get('Content-Type', '').strip().lower()}\n"
        f"host:{request.headers.get('Host', '').strip().lower()}\n"
    )
    canonical = "POST\n/\n\n" + canonical_headers + "\ncontent-type;host\n" + hashlib.sha256(request.body).hexdigest()
    scope = f"{date}/{service}/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _container(data: bytes) -> str | None:
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data[:3] == b"FLV":
        return "flv"
    return None


def _tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 160, 140)).save(out, "JPEG")
    return out.getvalue()


class FakeTencent(LocalServer):
    """The fake server; see the module docstring. Thread-safe; the knobs may change while it runs."""

    name = "fake-tencent"

    def __init__(
        self,
        *,
        secret_id: str = "AKIDfakeTencentSecretId0123456789",
        secret_key: str = "fakeTencentSecretKey0123456789ab",
        clock: Callable[[], float] = time.time,
        code_lifetime: float = 600.0,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.clock = clock
        self.code_lifetime = code_lifetime
        self.latency = 0.0
        self.same_sim = 88.6
        #: codes ``GetLiveCode`` answers first, in order (then random ones): for a script that cannot read replies
        self.next_codes: list[str] = []
        self.refused: list[str] = []
        self.seen: list[dict[str, Any]] = []
        #: (start, end) ``time.monotonic()`` of each LivenessRecognition the fake answered (its own time, latency
        #: included; the request body was already received at the start)
        self.timings: list[tuple[float, float]] = []
        self._people: dict[str, tuple[str, str]] = {}  # id card -> (name, person)
        self._videos: dict[str, Video] = {}
        self._codes: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Stop serving (stalled requests are released)."""
        self._stopping.set()
        super().stop()

    # -- test controls -----------------------------------------------------------------------------

    def provider_config(self, **overrides: Any) -> dict[str, Any]:
        """A ``providers.tencent`` section pointing at this server."""
        section = {
            "secret_id": self.secret_id,
            "secret_key": self.secret_key,
            "endpoint": self.endpoint,
            "region": "ap-guangzhou",
        }
        section.update(overrides)
        return section

    def add_person(self, id_card: str, name: str, person: str) -> None:
        """The authority knows ``id_card`` as ``name``, whose photo shows ``person``."""
        with self._lock:
            self._people[id_card.upper()] = (name, person)

    def set_video(self, video: bytes, person: str | None, **what: Any) -> None:
        """``video`` shows ``person`` (``None``: no face) saying ``says``; ``faces``, ``live``, ``dark``."""
        with self._lock:
            self._videos[hashlib.sha256(video).hexdigest()] = Video(person, **what)

    def inject(
        self,
        code: str | None = None,
        *,
        http_status: int | None = None,
        garbage: bool = False,
        stall: float = 0.0,
        times: int = 1,
        action: str = "",
    ) -> None:
        """The next ``times`` requests of ``action`` (any when empty) fail this way (after the signature check
        for a ``code``)."""
        with self._lock:
            self._faults.append(_Fault(action, times, code, http_status, garbage, stall))

    def count(self, action: str) -> int:
        """Requests received for ``action`` (refused ones included)."""
        with self._lock:
            return self._counts[action]

    @property
    def codes_issued(self) -> list[str]:
        """Every ``LiveCode`` issued, oldest first."""
        with self._lock:
            return list(self._codes)

    # -- serving -----------------------------------------------------------------------------------

    def _take_fault(self, action: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.action in ("", action) and fault.remaining > 0:
                    fault.remaining -= 1
                    if not fault.remaining:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, inner: dict[str, Any]) -> tuple[int, str, bytes]:
        inner = {**inner, "RequestId": str(uuid.uuid4())}
        return 200, "application/json", json.dumps({"Response": inner}, ensure_ascii=False).encode()

    def _error(self, code: str, message: str) -> tuple[int, str, bytes]:
        with self._lock:
            self.refused.append(code)
        return self._answer({"Error": {"Code": code, "Message": message}})

    def handle_request(self, request: Request) -> tuple[int, str, bytes]:
        """One request: check the protocol and the signature, then the action."""
        action = request.headers.get("X-TC-Action", "")
        with self._lock:
            self._counts[action] += 1
        fault = self._take_fault(action)
        if fault is not None and fault.stall:
            self._stopping.wait(fault.stall)
        if fault is not None and fault.http_status:
            return fault.http_status, "text/html", b"<html><body>502 Bad Gateway</body></html>"
        if fault is not None and fault.garbage:
            return 200, "text/html", b"<html>gateway says hello</html>"
        if request.method != "POST" or request.path != "/":
            return self._error("UnsupportedProtocol", "only POST / is served")
        refusal = self._check_signature(request)
        if refusal is not None:
            return self._error(*refusal)
        if action not in ACTIONS:
            return self._error("InvalidAction", f"the action {action!r} does not exist")
        if request.headers.get("X-TC-Version") != VERSION:
            return self._error("NoSuchVersion", "the API version does not exist")
        if not request.headers.get("X-TC-Region"):
            return self._error("InvalidParameter.MissingParameter", "X-TC-Region is missing")
        if fault is not None and fault.code:
            return self._error(fault.code, "injected")
        try:
            params = json.loads(request.body or b"{}")
        except ValueError:
            return self._error("InvalidParameter", "the body is not JSON")
        if not isinstance(params, dict):
            return self._error("InvalidParameter", "the body is not a JSON object")
        if self.latency:
            self._stopping.wait(self.latency)
        if action == "GetLiveCode":
            with self._lock:
                code = self.next_codes.pop(0) if self.next_codes else f"{secrets.randbelow(10000):04d}"
                self._codes[code] = self.clock()
            return self._answer({"LiveCode": code})
        started = time.monotonic()
        try:
            return self._liveness(params)
        finally:
            with self._lock:
                self.timings.append((started - (self.latency or 0.0), time.monotonic()))

    def _check_signature(self, request: Request) -> tuple[str, str] | None:
        auth = request.headers.get("Authorization", "")
        timestamp = request.headers.get("X-TC-Timestamp", "")
        match = _AUTH.match(auth)
        if not match or not timestamp.isdigit():
            return "AuthFailure.InvalidAuthorization", "Authorization or X-TC-Timestamp is malformed"
        if abs(self.clock() - int(timestamp)) > 300:
            return "AuthFailure.SignatureExpire", "the signature is expired (more than 5 minutes)"
        if match["id"] != self.secret_id:
            return "AuthFailure.SecretIdNotFound", "the SecretId does not exist"
        date = dt.datetime.fromtimestamp(int(timestamp), dt.timezone.utc).strftime("%Y-%m-%d")
        if match["date"] != date or match["service"] != "faceid" or match["headers"] != "content-type;host":
            return "AuthFailure.SignatureFailure", "the credential scope or signed headers are wrong"
        if not request.headers.get("Content-Type", "").lower().startswith("application/json"):
            return "AuthFailure.SignatureFailure", "unsupported Content-Type"
        expected = expected_signature(self.secret_key, request, date, timestamp, "faceid")
        if not hmac.compare_digest(expected, match["sig"]):
            return "AuthFailure.SignatureFailure", "the signature does not match"
        return None

    def _liveness(self, params: dict[str, Any]) -> tuple[int, str, bytes]:
        for name in ("IdCard", "Name", "LivenessType"):
            if not params.get(name):
                return self._error("InvalidParameter.MissingParameter", f"{name} is missing")
        if params["LivenessType"] not in ("LIP", "ACTION", "SILENT"):
            return self._error("InvalidParameterValue", "LivenessType must be LIP, ACTION or SILENT")
        encoded = params.get("VideoBase64") or ""
        if not encoded:
            return self._error("InvalidParameter.MissingParameter", "VideoBase64 or VideoUrl is missing")
        with self._lock:
            self.seen.append(
                {
                    "LivenessType": params["LivenessType"],
                    "ValidateData": params.get("ValidateData"),
                    "size": len(encoded),
                }
            )
        if len(encoded) > MAX_VIDEO_BASE64:
            return self._error("FailedOperation.LipSizeError", "the video is too large")
        try:
            video = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return self._error("FailedOperation.VideoDecodeFailed", "the video could not be decoded")
        if _container(video) is None:
            return self._error("FailedOperation.VideoDecodeFailed", "the video could not be decoded")
        with self._lock:
            record = self._people.get(str(params["IdCard"]).upper())
            shown = self._videos.get(hashlib.sha256(video).hexdigest(), Video(None))
            issued = self._codes.get(str(params.get("ValidateData") or ""))
        if record is None:
            return self._error("FailedOperation.IdNoExistSystem", "no such ID number in the authority's records")
        if record[0] != params["Name"]:
            return self._error("FailedOperation.IdNameMisMatch", "the name and the ID number do not match")
        if shown.person is None or shown.faces == 0:
            return self._error("FailedOperation.LifePhotoDetectNoFaces", "no face in the video")
        if shown.faces > 1:
            return self._error("FailedOperation.LifePhotoDetectFaces", "several faces in the video")
        if shown.dark:
            return self._error("FailedOperation.ActionLightDark", "the light is too dark")
        if not shown.live:
            return self._error("FailedOperation.LivessDetectFake", "not a live person")
        if params["LivenessType"] == "LIP":
            fresh = issued is not None and self.clock() - issued <= self.code_lifetime
            if not fresh or shown.says != params.get("ValidateData"):
                return self._error("FailedOperation.LipVoiceRecognize", "the code read does not match")
        if shown.person != record[1]:
            return self._error("FailedOperation.CompareLowSimilarity", "similarity 21.0 is under the threshold")
        frame = base64.b64encode(_tiny_jpeg()).decode()
        return self._answer(
            {"Result": "Success", "Description": "成功", "Sim": self.same_sim, "BestFrameBase64": frame}
        )


@pytest.fixture
def fake_tencent() -> Iterator[FakeTencent]:
    """A started :class:`FakeTencent` (real clock), stopped after the test."""
    server = FakeTencent().start()
    try:
        yield server
    finally:
        server.stop()
