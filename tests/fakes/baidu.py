"""A fake Baidu AI Cloud (AIP) server for tests and benchmarks: real HTTP on 127.0.0.1, port 0.

It speaks the protocol of docs/PROVIDERS.md on every path our client (and the ``baidu-aip`` SDK) uses::

    server = FakeBaidu(qps_cap=5, latency=0.02).start()
    client = BaiduClient(server.api_key, server.secret_key, endpoint=server.endpoint)
    ...
    server.stop()

In pytest, use the ``fake_baidu`` fixture (a started server, stopped afterwards).

Paths
    ``/oauth/2.0/token`` (GET or POST, parameters in the query or a form body): ``invalid_client`` with
    ``unknown client id`` for a wrong API key and ``Client authentication failed`` for a wrong secret key
    (HTTP 401). A token lives ``token_lifetime`` seconds (then 111); :meth:`FakeBaidu.revoke` makes
    tokens invalid (110); :meth:`FakeBaidu.expire_tokens` expires them now.
    ``/rest/2.0/ocr/v1/{general_basic,general,accurate_basic,accurate}`` (form body).
    ``/rest/2.0/face/v3/match`` (JSON list of two images).
    ``/rpc/2.0/brain/solution/faceprint/{verifyToken/generate,idcard/submit,result/simple,result/detail,result/stat}``
    (JSON; answers in the ``success``/``code``/``message`` shape).
    ``/face/print/`` (GET): a stand-in for the H5 page.
    ``/rest/2.0/face/v1/faceliveness/sessioncode`` (JSON; ``min_code_length``/``max_code_length``) and
    ``/rest/2.0/face/v1/faceliveness/verify`` (form body: ``session_id``, ``video_base64``): answers in the
    ``err_no``/``err_msg``/``result`` shape these paths use. ``/rest/2.0/face/v3/person/verify`` (JSON: ``image``,
    ``image_type``, ``id_card_number``, ``name``, controls).

What the recognisers answer (deterministic)
    Images are identified by their aspect ratio (within 3 %) and a 256-bit *average hash* of their pixels
    (16×16 greyscale, above/below the mean), matched to the nearest registration within
    :data:`HASH_TOLERANCE` bits, so a registration survives our client's re-encoding and downscaling.

    - OCR: :meth:`FakeBaidu.set_text` registers the lines of an image; any other image answers
      ``default_text``, or one line ``"<width>x<height>"`` of the decoded image when that is ``None``.
      Positional endpoints add a synthetic ``location`` per line (lines stacked 30 px apart).
    - Face match: :meth:`FakeBaidu.set_face` says who is in an image (``person=None``: no face, error
      222202; ``error=223114``: that face error for that image). An unregistered image holds a face of
      its own (so an image matched with itself is the same person). Same person: ``same_score``
      (92.5); different people: ``different_score`` (12.0).
    - Faceprint: ``verifyToken/generate`` needs a plan in ``plans``; a verification is *pending* (its
      results answer ``pending_code``, a value Baidu does not document) until the test calls
      :meth:`FakeBaidu.finish_verification` with ``passed=True`` or ``False``; ``result/detail`` then has
      ``verify_result`` and ``idcard_confirm`` (``name``/``idcard_number``) or, with ``via_ocr=True``,
      ``idcard_ocr_result`` (``name``/``id_card_number``) instead, **masked** as Baidu answers them
      (``柴*``, ``370***********5826``). A failure at a step (``code=223120``, ``222351``, …) answers that
      error code and no scores.
    - Video liveness: a session lives ``session_lifetime`` (300 s: then 216502, as an unknown one); the video
      must be an mp4/avi/flv container (else 216508) and is identified by its SHA-256 (:meth:`FakeBaidu.set_video`:
      who is in it, the digits said, faces, live or not; unregistered: no face, 216501; several faces: 216507).
      The answer has ``score`` (``live_score`` or ``fake_score``), ``thresholds`` (``frr_1e-4`` 0.05,
      ``frr_1e-3`` 0.3, ``frr_1e-2`` 0.9), ``code {create, identify}`` (what was asked, what was heard: comparing
      them is the caller's job) and ``pic_list`` with a JPEG frame of that person.
    - Person verify: :meth:`FakeBaidu.add_person` registers an ID record; an unknown ID number answers 222351
      (as Baidu: "no such ID number, or name and number do not match"), a known one with another name 222351
      too; a frame of the record's person scores ``same_score`` (92.5), of anyone else ``different_score``.

Knobs (attributes, change them at any time)
    ``latency`` (seconds before each API answer), ``qps_cap`` (a token bucket of that rate and burst;
    above it: error 18), ``daily_limit`` (API requests after which every call answers 17),
    ``token_lifetime``; and :meth:`FakeBaidu.inject` for the next N requests on a path: an error code,
    an HTTP status with an HTML body (5xx), a garbage (non-JSON) body, or a stall (for timeouts).
    Counters: :meth:`FakeBaidu.count` per path, :attr:`FakeBaidu.token_fetches`, and
    ``errors_sent`` per error code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from PIL import Image

from tests.fakes.server import ProviderFake, json_bytes, running

TOKEN_PATH = "/oauth/2.0/token"
OCR_PREFIX = "/rest/2.0/ocr/v1/"
OCR_APIS = ("general_basic", "general", "accurate_basic", "accurate")
MATCH_PATH = "/rest/2.0/face/v3/match"
FACEPRINT_PREFIX = "/rpc/2.0/brain/solution/faceprint/"
H5_PATH = "/face/print/"
LIVENESS_PREFIX = "/rest/2.0/face/v1/faceliveness/"
PERSON_VERIFY_PATH = "/rest/2.0/face/v3/person/verify"
HASH_SIDE = 16
HASH_TOLERANCE = 24  # of 256 bits
ASPECT_TOLERANCE = 0.03
LANGUAGES = ("CHN_ENG", "ENG", "JAP", "KOR", "FRE", "GER", "SPA", "RUS", "POR", "ITA")
FACE_TYPES = ("LIVE", "IDCARD", "WATERMARK", "CERT", "INFRARED")
CONTROLS = ("NONE", "LOW", "NORMAL", "HIGH")

MESSAGES = {
    1: "Unknown error",
    2: "Service temporarily unavailable",
    4: "Open api request limit reached",
    6: "No permission to access data",
    17: "Open api daily request limit reached",
    18: "Open api qps request limit reached",
    19: "Open api total request limit reached",
    100: "Invalid parameter",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
    216100: "invalid param",
    216101: "not enough param",
    216200: "empty image",
    216201: "image format error",
    216202: "image size error",
    216203: "image base64 error",
    222202: "pic not has face",
    222203: "image check fail",
    222208: "the number of image is incorrect",
    223113: "face is covered",
    223114: "face is fuzzy",
    223115: "face light is not good",
    223116: "incomplete face",
    223120: "liveness check fail",
    282000: "internal error",
    283400: "service error",
    283435: "plan not exist",
    283513: "request body error",
    216500: "code digit error",
    216501: "not found face",
    216502: "session lapse",
    216507: "found many faces",
    216508: "not found video info",
    216509: "voice can not identify",
    222351: "id number and name not match or id number not exist",
}


def average_hash(data: bytes) -> tuple[int, tuple[int, int]] | None:
    """``(256-bit average hash, (width, height))`` of an encoded image, or ``None`` if it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
            small = im.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    except Exception:
        return None
    pixels = small.tobytes()
    mean = sum(pixels) / len(pixels)
    bits = 0
    for p in pixels:
        bits = (bits << 1) | (p > mean)
    return bits, size


@dataclass(frozen=True)
class _Key:
    """What identifies an image: its average hash and its aspect ratio (both survive re-encoding and resizing)."""

    hash: int
    aspect: float

    @classmethod
    def of(cls, data: bytes) -> _Key | None:
        analysed = average_hash(data)
        if analysed is None:
            return None
        h, (width, height) = analysed
        return cls(h, width / height)

    def near(self, other: _Key) -> bool:
        return abs(self.aspect / other.aspect - 1) <= ASPECT_TOLERANCE and (self.hash ^ other.hash).bit_count() <= (
            HASH_TOLERANCE
        )


def _nearest(registry: dict[_Key, Any], key: _Key) -> Any | None:
    best, best_d = None, HASH_TOLERANCE + 1
    for known, value in registry.items():
        if known.near(key):
            d = (known.hash ^ key.hash).bit_count()
            if d < best_d:
                best, best_d = value, d
    return best


@dataclass
class _Fault:
    path: str
    remaining: int
    code: int | None = None
    message: str | None = None
    http_status: int | None = None
    garbage: bool = False
    stall: float = 0.0


@dataclass
class _Token:
    issued: float
    lifetime: float
    revoked: bool = False
    expired: bool = False


@dataclass
class Verification:
    """One faceprint verification (its state as the fake keeps it)."""

    plan_id: str
    status: str = "pending"  # pending | passed | failed
    id_name: str | None = None
    id_no: str | None = None
    certificate_type: int = 0
    score: float = 0.0
    liveness_score: float = 0.0
    spoofing: float = 0.0
    via_ocr: bool = False
    failure_code: int | None = None
    requests: Counter = field(default_factory=Counter)


class FakeBaidu(ProviderFake):
    """The fake server; see the module docstring. Thread-safe; all knobs may change while it runs."""

    name = "fake-baidu"
    provider = "baidu"

    def __init__(
        self,
        *,
        api_key: str = "fake-api-key-0123456789",
        secret_key: str = "fake-secret-key-0123456789",
        token_lifetime: float = 2592000,
        latency: float = 0.0,
        qps_cap: float | None = None,
        daily_limit: int | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.secret_key = secret_key
        self.token_lifetime = token_lifetime
        self.latency = latency
        self.qps_cap = qps_cap
        self.daily_limit = daily_limit
        self.qps_burst: float | None = None  # bucket size; None: one second's worth (qps_cap)
        self.default_text: list[str] | None = None
        self.same_score = 92.5
        self.different_score = 12.0
        self.plans: set[str] = {"fake-plan"}
        self.pending_code = 283414
        self.errors_sent: Counter = Counter()
        self.verifications: dict[str, Verification] = {}
        self.images_seen: list[tuple[str, int, int]] = []  # (path, width, height) of decoded images
        self.last_params: dict[str, dict[str, Any]] = {}  # path -> the non-image fields of its last request
        self._tokens: dict[str, _Token] = {}
        self._faults: list[_Fault] = []
        self._texts: dict[_Key, list[str]] = {}
        self._faces: dict[_Key, tuple[str | None, int | None]] = {}
        self._api_calls = 0
        self._bucket: float | None = None  # starts full on first use
        self._bucket_at = time.monotonic()
        self._log_ids = itertools.count(1_000_000_000)
        self._stopping = threading.Event()
        self.session_lifetime = 300.0
        self.live_score = 0.98
        self.fake_score = 0.02
        self._videos: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, tuple[str, float]] = {}
        self._people: dict[str, tuple[str, str]] = {}

    # -- life cycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving (stalled requests are released)."""
        self._stopping.set()
        super().stop()

    def provider_config(self, **overrides: Any) -> dict[str, Any]:
        """A ``providers.baidu`` config section pointing at this server (``qps``: the cap, else 50)."""
        section = {
            "api_key": self.api_key,
            "secret_key": self.secret_key,
            "endpoint": self.endpoint,
            "qps": float(self.qps_cap or 50),
            "token_refresh_margin": 86400.0,
            "h5_base_url": f"{self.endpoint}{H5_PATH}",
        }
        section.update(overrides)
        return section

    def config(self, *, http: dict[str, Any] | None = None, io_workers: int = 8, **overrides: Any) -> dict[str, Any]:
        """A whole config dict (the parts our code reads) with fast timeouts and backoff for tests."""
        return {**super().config(http=http, **overrides), "workers": {"io": io_workers, "cpu": 1}}

    # -- test controls -----------------------------------------------------------------------------

    def inject(
        self,
        code: int | None = None,
        *,
        message: str | None = None,
        http_status: int | None = None,
        garbage: bool = False,
        stall: float = 0.0,
        times: int = 1,
        path: str = "",
    ) -> None:
        """Make the next ``times`` requests whose path starts with ``path`` fail in one way.

        ``code``: a Baidu error (``error_code`` shape; ``code`` shape on faceprint paths for codes
        ≥ 200000); ``http_status``: that status with an HTML body; ``garbage``: HTTP 200 with a
        non-JSON body; ``stall``: wait that long before answering normally (the client times out).
        Faults queue in order; each request consumes at most one.
        """
        fault = _Fault(path, times, code, message, http_status, garbage, stall)
        with self._lock:
            self._faults.append(fault)

    def revoke(self, token: str | None = None) -> None:
        """Make ``token`` (all issued tokens when ``None``) invalid: calls with it get error 110."""
        with self._lock:
            for value, tok in self._tokens.items():
                if token is None or value == token:
                    tok.revoked = True

    def expire_tokens(self) -> None:
        """Expire every issued token now: calls with one get error 111."""
        with self._lock:
            for tok in self._tokens.values():
                tok.expired = True

    @property
    def issued_tokens(self) -> list[str]:
        """Every token issued so far, oldest first."""
        with self._lock:
            return list(self._tokens)

    def set_text(self, image: bytes, lines: list[str]) -> None:
        """OCR of ``image`` (or anything that looks like it) answers ``lines``."""
        key = _Key.of(image)
        assert key is not None, "set_text needs a decodable image"
        with self._lock:
            self._texts[key] = list(lines)

    def set_face(self, image: bytes, person: str | None, *, error: int | None = None) -> None:
        """``image`` shows ``person`` (``None``: no face; ``error``: answer that face error for it)."""
        key = _Key.of(image)
        assert key is not None, "set_face needs a decodable image"
        with self._lock:
            self._faces[key] = (person, error)

    def set_video(self, video: bytes, person: str | None, *, says: str = "", faces: int = 1, live: bool = True) -> None:
        """``video`` (by its bytes) shows ``person`` (``None``: no face) saying ``says``."""
        with self._lock:
            self._videos[hashlib.sha256(video).hexdigest()] = {
                "person": person,
                "says": says,
                "faces": faces,
                "live": live,
            }

    def add_person(self, id_card_number: str, name: str, person: str) -> None:
        """The authoritative source knows ``id_card_number`` as ``name``, with a photo of ``person``."""
        with self._lock:
            self._people[id_card_number.upper()] = (name, person)

    def frame_of(self, person: str) -> bytes:
        """The JPEG frame the fake cuts from a video of ``person`` (registered as that person's face)."""
        import random

        pixels = random.Random(hashlib.sha256(person.encode()).digest()).randbytes(32 * 32)
        image = Image.frombytes("L", (32, 32), pixels).resize((256, 256), Image.Resampling.NEAREST).convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=92)
        data = out.getvalue()
        key = _Key.of(data)
        assert key is not None
        with self._lock:
            self._faces[key] = (person, None)
        return data

    @property
    def session_codes(self) -> list[str]:
        """Every code issued by ``sessioncode``, oldest first."""
        with self._lock:
            return [code for code, _ in self._sessions.values()]

    def finish_verification(
        self,
        verify_token: str,
        *,
        passed: bool = True,
        score: float | None = None,
        liveness_score: float | None = None,
        spoofing: float | None = None,
        name: str | None = None,
        id_number: str | None = None,
        via_ocr: bool = False,
        code: int | None = None,
    ) -> None:
        """The user finished the H5 flow: results now answer ``passed`` (or failed) scores and identity.

        ``code`` (with ``passed=False``): the attempt failed at a step, so ``result/detail`` answers that error
        code and no scores (e.g. 223120 liveness failed, 222351 name and ID number do not match)."""
        with self._lock:
            v = self.verifications[verify_token]
            v.status = "passed" if passed else "failed"
            v.failure_code = None if passed else code
            v.score = score if score is not None else (91.5 if passed else 31.0)
            v.liveness_score = liveness_score if liveness_score is not None else (0.98 if passed else 0.12)
            v.spoofing = spoofing if spoofing is not None else (0.00002 if passed else 0.87)
            v.id_name = name or v.id_name or "张三"
            v.id_no = id_number or v.id_no or "11010519491231002X"
            v.via_ocr = via_ocr

    @property
    def token_fetches(self) -> int:
        """Requests received on the token endpoint."""
        return self.count(TOKEN_PATH)

    @property
    def api_calls(self) -> int:
        """Requests received on every path but the token endpoint and the H5 page."""
        with self._lock:
            return sum(n for p, n in self._counts.items() if p not in (TOKEN_PATH, H5_PATH))

    def reset_counters(self) -> None:
        """Zero every counter (tokens, faults and registrations stay)."""
        with self._lock:
            self._counts.clear()
            self.errors_sent.clear()
            self._api_calls = 0
            self.images_seen.clear()

    # -- request handling (called by the handler threads) -------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path) and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _qps_ok(self) -> bool:
        with self._lock:
            if not self.qps_cap:
                return True
            now = time.monotonic()
            capacity = max(1.0, self.qps_burst if self.qps_burst is not None else self.qps_cap)
            level = capacity if self._bucket is None else self._bucket
            self._bucket = min(capacity, level + (now - self._bucket_at) * self.qps_cap)
            self._bucket_at = now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return True
            return False

    def _check_token(self, token: str | None) -> int:
        with self._lock:
            tok = self._tokens.get(token or "")
            if tok is None or tok.revoked:
                return 110
            if tok.expired or time.monotonic() >= tok.issued + tok.lifetime:
                return 111
            return 0

    def _issue_token(self) -> dict[str, Any]:
        with self._lock:
            n = len(self._tokens) + 1
            lifetime = self.token_lifetime
            value = f"24.{secrets.token_hex(16)}.{int(lifetime)}.{int(time.time())}.282335-{n}"
            self._tokens[value] = _Token(time.monotonic(), lifetime)
        expires_in = int(lifetime) if float(lifetime).is_integer() else lifetime
        return {
            "refresh_token": f"25.{secrets.token_hex(16)}.315360000.{int(time.time())}.282335-{n}",
            "expires_in": expires_in,
            "session_key": secrets.token_hex(12),
            "access_token": value,
            "scope": "public brain_all_scope vis-ocr_ocr vis-faceverify_faceverify_h5-face-liveness",
            "session_secret": secrets.token_hex(16),
        }

    def _error(self, code: int, message: str | None = None) -> dict[str, Any]:
        with self._lock:
            self.errors_sent[code] += 1
        return {"error_code": code, "error_msg": message or MESSAGES.get(code, "error"), "log_id": next(self._log_ids)}

    def _fp_error(self, code: int, message: str | None = None) -> dict[str, Any]:
        with self._lock:
            self.errors_sent[code] += 1
        return {
            "success": False,
            "code": code,
            "message": message or MESSAGES.get(code, "error"),
            "result": None,
            "log_id": next(self._log_ids),
        }

    def _ok(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"log_id": next(self._log_ids), **body}

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str) -> tuple:
        """``(status, content type, body bytes)`` for one request."""
        with self._lock:
            self._counts[path] += 1
        # the QPS cap counts requests as they arrive (before any latency or stall), as a provider's front door does
        admitted = self._qps_ok() if method == "POST" and path not in (TOKEN_PATH, H5_PATH) else True
        fault = self._take_fault(path)
        if fault is not None and fault.stall:
            self._stopping.wait(fault.stall)
        if fault is not None and fault.http_status:
            page = f"<html><body><h1>{fault.http_status} Bad Gateway</h1></body></html>".encode()
            return fault.http_status, "text/html", page
        if fault is not None and fault.garbage:
            return 200, "text/html", b"<html>upstream returned something odd</html>"
        if path == TOKEN_PATH:
            return self._token(method, query, body, content_type)
        if path == H5_PATH and method == "GET":
            return 200, "text/html; charset=utf-8", b"<html><body>fake faceprint page</body></html>"
        if method != "POST":
            return 200, "application/json", json_bytes(self._error(3, "Unsupported openapi method"))
        is_fp = path.startswith(FACEPRINT_PREFIX)
        if fault is not None and fault.code is not None:
            shape = self._fp_error if is_fp and fault.code >= 200000 else self._error
            return 200, "application/json", json_bytes(shape(fault.code, fault.message))
        answer = self._api(path, query, body, content_type, is_fp, admitted)
        return 200, "application/json", json_bytes(answer)

    def _token(self, method: str, query: dict[str, str], body: bytes, content_type: str) -> tuple:
        params = dict(query)
        if method == "POST" and "form" in content_type:
            params.update({k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()})
        if params.get("grant_type") != "client_credentials":
            err = {
                "error": "unsupported_grant_type",
                "error_description": "The authorization grant type is not supported",
            }
            return 400, "application/json", json_bytes(err)
        if params.get("client_id") != self.api_key:
            return (
                401,
                "application/json",
                json_bytes({"error": "invalid_client", "error_description": "unknown client id"}),
            )
        if params.get("client_secret") != self.secret_key:
            err = {"error": "invalid_client", "error_description": "Client authentication failed"}
            return 401, "application/json", json_bytes(err)
        return 200, "application/json", json_bytes(self._issue_token())

    def _api(
        self, path: str, query: dict[str, str], body: bytes, content_type: str, is_fp: bool, admitted: bool
    ) -> dict[str, Any]:
        if self.latency:
            self._stopping.wait(self.latency)
        code = self._check_token(query.get("access_token"))
        if code:
            return self._error(code)
        with self._lock:
            self._api_calls += 1
            over = self.daily_limit is not None and self._api_calls > self.daily_limit
        if over:
            return self._error(17)
        if not admitted:
            return self._error(18)
        if path.startswith(OCR_PREFIX):
            return self._ocr(path, path[len(OCR_PREFIX) :], body)
        if path == MATCH_PATH:
            return self._match(body)
        if path.startswith(LIVENESS_PREFIX):
            return self._liveness(path[len(LIVENESS_PREFIX) :], body)
        if path == PERSON_VERIFY_PATH:
            return self._person_verify(body)
        if is_fp:
            return self._faceprint(path[len(FACEPRINT_PREFIX) :], body)
        return self._error(3, "Unsupported openapi method")

    # -- OCR ---------------------------------------------------------------------------------------

    def _ocr(self, path: str, api: str, body: bytes) -> dict[str, Any]:
        if api not in OCR_APIS:
            return self._error(3, "Unsupported openapi method")
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace"), keep_blank_values=True).items()}
        with self._lock:
            self.last_params[path] = {k: v for k, v in form.items() if k != "image"}
        if "image" not in form and "url" not in form:
            return self._error(216101)
        b64 = form.get("image", "")
        if not b64:
            return self._error(216200)
        limit = (10 if api.startswith("accurate") else 8) * 1024 * 1024
        if len(b64) > limit:
            return self._error(216202)
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return self._error(216203)
        language = form.get("language_type", "CHN_ENG")
        if language not in LANGUAGES:
            return self._error(216100)
        analysed = average_hash(raw)
        fmt = _format(raw)
        if analysed is None or fmt not in ("JPEG", "PNG", "BMP"):
            return self._error(216201)
        h, (width, height) = analysed
        max_side = 8192 if api.startswith("accurate") else 4096
        if min(width, height) < 15 or max(width, height) > max_side:
            return self._error(216202)
        with self._lock:
            self.images_seen.append((path, width, height))
            lines = _nearest(self._texts, _Key(h, width / height))
        if lines is None:
            lines = self.default_text if self.default_text is not None else [f"{width}x{height}"]
        words = []
        for i, line in enumerate(lines):
            item: dict[str, Any] = {"words": line}
            if api in ("general", "accurate"):
                item["location"] = {"top": 10 + 30 * i, "left": 10, "width": 12 * len(line), "height": 24}
            if form.get("probability") == "true":
                item["probability"] = {"average": 0.98, "min": 0.91, "variance": 0.0004}
            words.append(item)
        answer: dict[str, Any] = {"words_result_num": len(words), "words_result": words}
        if form.get("detect_direction") == "true":
            answer["direction"] = 0
        if form.get("paragraph") == "true":
            answer["paragraphs_result_num"] = 1
            answer["paragraphs_result"] = [{"words_result_idx": list(range(len(words)))}]
        return self._ok(answer)

    # -- face match --------------------------------------------------------------------------------

    def _match(self, body: bytes) -> dict[str, Any]:
        try:
            items = json.loads(body)
        except ValueError:
            return self._error(216100, "invalid param: body is not JSON")
        if not isinstance(items, list) or len(items) != 2 or not all(isinstance(i, dict) for i in items):
            return self._error(222208)
        with self._lock:
            self.last_params[MATCH_PATH] = {"images": [{k: v for k, v in i.items() if k != "image"} for i in items]}
        people = []
        for item in items:
            if item.get("image_type") != "BASE64" or item.get("face_type", "LIVE") not in FACE_TYPES:
                return self._error(216100)
            if (
                item.get("quality_control", "NONE") not in CONTROLS
                or item.get("liveness_control", "NONE") not in CONTROLS
            ):
                return self._error(216100)
            b64 = item.get("image") or ""
            if not b64:
                return self._error(216200)
            if len(b64) > 2 * 1024 * 1024:
                return self._error(216202)
            try:
                raw = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                return self._error(222203)
            analysed = average_hash(raw)
            if analysed is None or _format(raw) == "GIF":
                return self._error(222203)
            h, (width, height) = analysed
            with self._lock:
                self.images_seen.append((MATCH_PATH, width, height))
                person, error = _nearest(self._faces, _Key(h, width / height)) or (f"anon-{h:064x}", None)
            if error:
                return self._error(error)
            if person is None:
                return self._error(222202)
            people.append((person, h))
        same = people[0][0] == people[1][0]
        score = self.same_score if same else self.different_score
        tokens = [hashlib.md5(f"{p}:{h}".encode()).hexdigest() for p, h in people]
        return self._ok(
            {
                "error_code": 0,
                "error_msg": "SUCCESS",
                "timestamp": int(time.time()),
                "cached": 0,
                "result": {"score": score, "face_list": [{"face_token": t} for t in tokens]},
            }
        )

    # -- video liveness and person verification ------------------------------------------------------

    def _lv_error(self, code: int) -> dict[str, Any]:
        with self._lock:
            self.errors_sent[code] += 1
        return {"err_no": code, "err_msg": MESSAGES.get(code, "error"), "serverlogid": next(self._log_ids)}

    def _liveness(self, api: str, body: bytes) -> dict[str, Any]:
        if api == "sessioncode":
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return self._lv_error(216100)
            low, high = int(data.get("min_code_length", 3)), int(data.get("max_code_length", 6))
            if not 3 <= low <= high <= 6:
                return self._lv_error(216500)
            length = low + secrets.randbelow(high - low + 1)
            code = "".join(str(secrets.randbelow(10)) for _ in range(length))
            session = "S" + secrets.token_hex(11)
            with self._lock:
                self._sessions[session] = (code, time.monotonic())
            answer = {"session_id": session, "code": code}
            return {"err_no": 0, "err_msg": "SUCCESS", "result": answer, "serverlogid": next(self._log_ids)}
        if api != "verify":
            return self._error(3, "Unsupported openapi method")
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace"), keep_blank_values=True).items()}
        with self._lock:
            self.last_params[LIVENESS_PREFIX + api] = {k: v for k, v in form.items() if k != "video_base64"}
            known = self._sessions.get(form.get("session_id", ""))
        if known is None or time.monotonic() - known[1] > self.session_lifetime:
            return self._lv_error(216502)
        try:
            video = base64.b64decode(form.get("video_base64", ""), validate=True)
        except (binascii.Error, ValueError):
            return self._lv_error(216508)
        if not (video[4:8] == b"ftyp" or video[:4] == b"RIFF" or video[:3] == b"FLV"):
            return self._lv_error(216508)
        with self._lock:
            shown = self._videos.get(hashlib.sha256(video).hexdigest(), {"person": None, "faces": 0})
        if shown["person"] is None or shown["faces"] == 0:
            return self._lv_error(216501)
        if shown["faces"] > 1:
            return self._lv_error(216507)
        score = self.live_score if shown["live"] else self.fake_score
        frame = base64.b64encode(self.frame_of(shown["person"])).decode()
        result = {
            "score": score,
            "maxspoofing": 0.0001 if shown["live"] else 0.9,
            "spoofing_score": 0.0001 if shown["live"] else 0.9,
            "thresholds": {"frr_1e-4": 0.05, "frr_1e-3": 0.3, "frr_1e-2": 0.9},
            "code": {
                "create": known[0],
                "identify": shown["says"],
                "similarity": 1 if shown["says"] == known[0] else 0,
            },
            "pic_list": [{"pic": frame, "face_id": secrets.token_hex(16), "liveness_score": score, "spoofing": 0.0001}],
        }
        return {"err_no": 0, "err_msg": "SUCCESS", "result": result, "serverlogid": next(self._log_ids)}

    def _person_verify(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            return self._error(216100)
        if not isinstance(data, dict) or data.get("image_type") != "BASE64":
            return self._error(216100)
        for name in ("image", "id_card_number", "name"):
            if not data.get(name):
                return self._error(216101)
        if data.get("quality_control", "NONE") not in CONTROLS or data.get("liveness_control", "NONE") not in CONTROLS:
            return self._error(216100)
        with self._lock:
            self.last_params[PERSON_VERIFY_PATH] = {k: v for k, v in data.items() if k in ("image_type",)}
            record = self._people.get(str(data["id_card_number"]).upper())
        if record is None or record[0] != data["name"]:
            return self._error(222351)
        try:
            raw = base64.b64decode(data["image"], validate=True)
        except (binascii.Error, ValueError):
            return self._error(222203)
        analysed = average_hash(raw)
        if analysed is None:
            return self._error(222203)
        h, (width, height) = analysed
        with self._lock:
            person, error = _nearest(self._faces, _Key(h, width / height)) or (None, None)
        if error:
            return self._error(error)
        if person is None:
            return self._error(222202)
        score = self.same_score if person == record[1] else self.different_score
        return self._ok({"error_code": 0, "error_msg": "SUCCESS", "result": {"score": score}})

    # -- faceprint (H5 real-name verification) -------------------------------------------------------

    def _faceprint(self, api: str, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            return self._fp_error(283513)
        if not isinstance(data, dict):
            return self._fp_error(283513)
        if api == "verifyToken/generate":
            plan = data.get("plan_id")
            if not plan:
                return self._fp_error(216100)
            if plan not in self.plans:
                return self._fp_error(283435)
            token = "vt" + secrets.token_hex(12)
            with self._lock:
                self.verifications[token] = Verification(plan_id=plan)
            return {"success": True, "result": {"verify_token": token}, "log_id": next(self._log_ids)}
        with self._lock:
            v = self.verifications.get(data.get("verify_token") or "")
            if v is not None:
                v.requests[api] += 1
        if v is None:
            return self._fp_error(216100, "invalid param: verify_token")
        if api == "idcard/submit":
            if not data.get("id_name") or not data.get("id_no"):
                return self._fp_error(216100)
            with self._lock:
                v.id_name, v.id_no = data["id_name"], data["id_no"]
                v.certificate_type = int(data.get("certificate_type", 0))
            return {"success": True, "result": None, "log_id": next(self._log_ids)}
        if api == "result/stat":
            stats = {step: {"0": n} for step, n in v.requests.items()}
            return {"success": True, "result": {"status": v.status, "stat": stats}, "log_id": next(self._log_ids)}
        if api not in ("result/simple", "result/detail"):
            return self._fp_error(283513, f"unknown path {api}")
        if v.status == "pending":
            return self._fp_error(self.pending_code, "verification not finished")
        if v.failure_code is not None:
            return self._fp_error(v.failure_code)
        if api == "result/simple":
            result = {"image": f"https://fake.baidu.example/face/{data['verify_token']}.jpg"}
            return {"success": True, "result": result, "log_id": next(self._log_ids)}
        detail: dict[str, Any] = {
            "verify_result": {"score": v.score, "liveness_score": v.liveness_score, "spoofing": v.spoofing},
            "idcard_images": {"front_base64": "", "back_base64": ""},
        }
        name, number = baidu_mask_name(v.id_name or ""), baidu_mask_id(v.id_no or "")  # as Baidu answers them
        if v.via_ocr:
            detail["idcard_ocr_result"] = {
                "name": name,
                "id_card_number": number,
                "birthday": "1949-12-31",
                "gender": "女",
                "nation": "汉",
                "address": "北京市朝阳区",
                "issue_authority": "北京市公安局朝阳分局",
                "issue_time": "2010-01-01",
                "expire_time": "2030-01-01",
            }
        else:
            detail["idcard_confirm"] = {"name": name, "idcard_number": number}
        return {"success": True, "result": detail, "log_id": next(self._log_ids)}


def baidu_mask_name(name: str) -> str:
    """``柴静`` → ``柴*``: how Baidu's ``result/detail`` shows a name (its documented example)."""
    return name[:1] + "*" * (len(name) - 1)


def baidu_mask_id(number: str) -> str:
    """``370102199001015826`` → ``370***********5826``: how ``result/detail`` shows an ID number."""
    return number[:3] + "*" * (len(number) - 7) + number[-4:] if len(number) > 7 else "*" * len(number)


def _format(raw: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return im.format
    except Exception:
        return None


@pytest.fixture
def fake_baidu() -> Iterator[FakeBaidu]:
    """A started :class:`FakeBaidu` (no latency, no QPS cap), stopped after the test."""
    yield from running(FakeBaidu())
