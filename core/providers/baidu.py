"""Baidu AI Cloud (AIP) client: OAuth token, OCR, face match V3, H5 real-name verification (faceprint), and video
liveness with a spoken code followed by person verification against the authoritative photo.

A plain synchronous, thread-safe library class, usable from a script without the bot::

    client = BaiduClient(api_key, secret_key)
    result = client.ocr(prepare(photo, OCR_LIMITS).data)

What every call does:

1. takes the access token from the :class:`~core.infra.tokens.TokenService` (one fetch however many threads
   ask; refreshed ``token_refresh_margin`` seconds before its 30 days are over);
2. waits for its turn at the client-side rate limiter: one per API key (and endpoint), shared by all
   threads and all clients of that key, spacing requests ``1/qps`` apart (10 % under: :data:`QPS_HEADROOM`)
   so that bursts queue instead of drawing error 18 (in cluster mode, when the token service has ``shared``
   Redis, the budget is in Redis and shared by every process: :class:`core.infra.rates.RedisRateLimiter`);
3. POSTs through a pooled session (:mod:`core.infra.http`: timeouts, transport retries for connection
   errors, timeouts and 5xx);
4. reads either answer shape (``error_code``/``error_msg``, or ``success``/``code``/``message`` on the
   faceprint paths) and then:

   - 100/110/111 (token invalid or expired): invalidates that token, fetches a new one, retries once;
   - 1, 2, 4, 18, 216630, 216634, 222201, 222205, 222206, 2229xx, 283400, 283512 (282000: once) and a
     non-JSON answer: retried ``http.retries`` times with backoff (``http.backoff``, doubling);
   - anything else, or when retries run out: raises the typed error its code means in :data:`ERRORS`
     (17 and 19 are never retried).

Every error is one of the kinds of :mod:`core.contract.errors` (with ``vendor`` ``"baidu"``): a catalogue key for
the user, a ``detail`` for the admin's log (which API, which code, what to do) and Baidu's ``code``; none contains
a key, a token, a name or an ID number. ``VerifyDetail`` keeps the name and ID number out of its ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from core.contract.errors import (
    FaceQuality,
    NoFace,
    ProviderBadImage,
    ProviderError,
    ProviderMisconfigured,
    QuotaExhausted,
    RateLimited,
    TemporarilyUnavailable,
)
from core.contract.fields import Field
from core.infra.http import HttpSettings, make_session
from core.infra.metrics import metered, metrics_of
from core.infra.rates import RateLimiter, RedisRateLimiter
from core.infra.redact import register_secret
from core.infra.shared import SharedRedis
from core.infra.tokens import TokenService, default_service
from core.providers.errors import Code, Rule, Vendor

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://aip.baidubce.com"
DEFAULT_H5_BASE_URL = "https://brain.baidu.com/face/print/"

#: What the client can do, for :func:`core.providers.choose_engine`.
CAPABILITIES = frozenset({"ocr", "face", "h5_verification", "video_liveness"})

#: ``providers.baidu`` in config.yaml.
SCHEMA = {
    "api_key": Field(str, default="", secret=True, help="Baidu AI Cloud API Key"),
    "secret_key": Field(str, default="", secret=True, help="Baidu AI Cloud Secret Key"),
    "endpoint": Field(str, default=DEFAULT_ENDPOINT, url=True, help="API base URL"),
    "qps": Field(float, default=2, min=0.1, help="the QPS bought per credential (the client keeps 10 % under it)"),
    "token_refresh_margin": Field(float, default=86400, min=0, help="refresh the token this early (s)"),
    "h5_base_url": Field(str, default=DEFAULT_H5_BASE_URL, url=True, help="H5 verification page"),
}
TOKEN_PATH = "/oauth/2.0/token"
OCR_PATH = "/rest/2.0/ocr/v1/"
OCR_APIS = ("general_basic", "general", "accurate_basic", "accurate")
MATCH_PATH = "/rest/2.0/face/v3/match"
FACEPRINT_PATH = "/rpc/2.0/brain/solution/faceprint/"
#: H5 video liveness: ``sessioncode`` (a spoken code, its session valid 5 minutes) and ``verify`` (the video).
LIVENESS_PATH = "/rest/2.0/face/v1/faceliveness/"
PERSON_VERIFY_PATH = "/rest/2.0/face/v3/person/verify"
#: Largest video we send in base64 (Baidu recommends a 5–15 s mp4; the limit is not clearly public: be safe).
MAX_VIDEO_BASE64 = 10 * 1024 * 1024
#: Baidu's token lifetime when an answer omits ``expires_in`` (30 days).
DEFAULT_TOKEN_LIFETIME = 2592000.0
#: Largest base64 image we send: OCR (newer docs: 8 MB; accurate: 10 MB) and face match (2 MB).
MAX_OCR_BASE64 = 8 * 1024 * 1024
MAX_FACE_BASE64 = 2 * 1024 * 1024

TOKEN_CODES = frozenset({100, 110, 111})
RETRY_CODES = frozenset(
    {1, 2, 4, 18, 282000, 216630, 216634, 222201, 222205, 222206, 283400, 283512, *range(222900, 223000)}
)
#: Video liveness codes that are Baidu's own trouble (speech/video services, its session store): retried too.
RETRY_CODES |= {216430, 216431, 216432, 216505, 216506}
#: retried once only (PROVIDERS.md: 282000 is "too much text" on high-accuracy OCR more often than a glitch)
RETRY_ONCE_CODES = frozenset({282000})
BAD_IMAGE_KEYS = {
    216200: "error.bad_image",
    216201: "error.image_format",
    216202: "error.image_too_large",
    216203: "error.bad_image",
    222203: "error.bad_image",
    282810: "error.bad_image",
}
FACE_QUALITY_KEYS = {
    223113: "error.face_occluded",
    223114: "error.face_blurred",
    223115: "error.face_lighting",
    223116: "error.face_incomplete",
    223120: "error.face_liveness",
}
#: Names of the console products to enable, for the "no permission" (6) message.
API_NAMES = {
    "ocr": "OCR (文字识别)",
    "face": "Face Recognition (人脸识别) — face match",
    "faceprint": "H5 real-name verification (H5人脸实名认证)",
    "liveness": "H5 video liveness (H5视频活体检测)",
    "person": "Identity verification (人脸实名认证 / person verify)",
}


# -- errors --------------------------------------------------------------------------------------------

#: Baidu's codes → the contract's error kinds (later entries win; the hints may name ``{endpoint}``, ``{api}``
#: and ``{retries}``). A code not here is a :class:`ProviderError` ("error.provider").
ERRORS = Vendor(
    "baidu",
    "Baidu",
    {
        **{
            code: Rule(ProviderError, "request refused", "error.provider_request")
            for code in (*range(216100, 216111), 222208, 283513)
        },
        **{code: Rule(FaceQuality, key=FACE_QUALITY_KEYS.get(code)) for code in range(223113, 223121)},
        **{code: Rule(ProviderBadImage, key=key) for code, key in BAD_IMAGE_KEYS.items()},
        222202: Rule(NoFace),
        283435: Rule(ProviderMisconfigured, "the plan does not exist; check the plan_id"),
        **{code: Rule(TemporarilyUnavailable, "still failing after {retries} retries") for code in RETRY_CODES},
        18: Rule(RateLimited, "QPS limit, still after {retries} retries"),
        17: Rule(QuotaExhausted, "daily request limit reached"),
        19: Rule(QuotaExhausted, "total request limit reached; buy more", "error.provider_quota_total"),
        **{code: Rule(ProviderMisconfigured, "a freshly fetched token was rejected too") for code in TOKEN_CODES},
        3: Rule(ProviderMisconfigured, "unsupported method; is {endpoint} the right endpoint?"),
        6: Rule(ProviderMisconfigured, "no permission; enable {api} for this app in the Baidu AI console"),
        14: Rule(ProviderMisconfigured, "IAM certification failed; check the app's credentials"),
    },
)


# -- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: ``box`` is ``(left, top, width, height)`` on the positional endpoints."""

    text: str
    box: tuple[int, int, int, int] | None = None
    probability: float | None = None


@dataclass(frozen=True)
class OcrResult:
    """The lines top to bottom; ``direction`` (0–3, quarter turns) when asked for."""

    lines: list[OcrLine]
    direction: int | None = None
    log_id: int | str | None = None

    @property
    def text(self) -> str:
        """All lines joined with newlines."""
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class FaceMatch:
    """Similarity 0–100 of the two faces (Baidu recommends 80 as "same person")."""

    score: float
    face_tokens: list[str]
    log_id: int | str | None = None


@dataclass(frozen=True)
class VerifyDetail:
    """``result/detail`` of an H5 verification. ``name`` and ``id_number`` never appear in ``repr``.

    The identity comes from ``idcard_confirm`` (what the user confirmed), else ``idcard_ocr_result``.
    """

    score: float | None
    liveness_score: float | None
    spoofing: float | None
    name: str | None = field(default=None, repr=False)
    id_number: str | None = field(default=None, repr=False)
    log_id: int | str | None = None


@dataclass(frozen=True)
class LivenessSession:
    """``faceliveness/sessioncode``: the digits the user reads aloud, and the session (valid 5 minutes)."""

    session_id: str = field(repr=False)
    code: str = field(repr=False)


@dataclass(frozen=True)
class VideoLiveness:
    """``faceliveness/verify``: the liveness ``score`` (0–1) with Baidu's ``thresholds`` (``frr_1e-4``, …),
    the code asked for (``code_create``) and the one heard (``code_identify``: comparing them is the caller's
    job), and the best frame (JPEG, kept out of ``repr``) with its liveness score."""

    score: float | None
    thresholds: dict[str, float]
    code_create: str
    code_identify: str
    best_frame: bytes | None = field(default=None, repr=False)
    frames: int = 0
    log_id: int | str | None = None


# -- rate limiting ---------------------------------------------------------------------------------------


#: The share of the configured ``providers.baidu.qps`` the client uses: calls spaced exactly at the cap that Baidu
#: sold draw an error 18 whenever network jitter bunches two of them up on arrival (Baidu's counter is not
#: public; the fake's strictest bucket shows it), so the admin sets the figure bought and the client keeps
#: 10 % under it (``bench/baidu_bench.py --burst 1``).
QPS_HEADROOM = 0.9

_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def rate_limiter(
    api_key: str, qps: float, endpoint: str = DEFAULT_ENDPOINT, shared: SharedRedis | None = None
) -> RateLimiter | RedisRateLimiter:
    """The limiter shared by every client of ``api_key`` at ``endpoint``; its ``qps`` becomes ``qps`` (the last
    configured wins), and it spaces calls at ``qps ×`` :data:`QPS_HEADROOM`.

    With ``shared`` (cluster mode) the budget is in Redis (``qps:baidu:<fingerprint>``), shared by every
    process; this process's limiter is its fallback while Redis cannot be reached.
    """
    key = _fingerprint(endpoint, api_key)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RateLimiter(qps, headroom=QPS_HEADROOM, name=f"baidu:{key}")
        else:
            limiter.qps = qps
    return limiter if shared is None else RedisRateLimiter(shared, f"baidu:{key}", qps, limiter)


# -- the client --------------------------------------------------------------------------------------------


class BaiduClient:
    """Baidu AIP client: see the module docstring. Thread-safe; create one and share it."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        qps: float = 2,
        h5_base_url: str = DEFAULT_H5_BASE_URL,
        token_refresh_margin: float = 86400,
        http: HttpSettings | None = None,
        tokens: TokenService | None = None,
    ) -> None:
        if not api_key or not secret_key:
            raise ValueError("BaiduClient needs an API key and a secret key")
        register_secret(api_key)
        register_secret(secret_key)
        self._api_key = api_key
        self._secret_key = secret_key
        self.endpoint = endpoint.rstrip("/")
        self.h5_base_url = h5_base_url
        self.http = http or HttpSettings()
        self.tokens = tokens or default_service()
        self.metrics = self.tokens.metrics  # the bot's metrics come with its token service
        self.token_key = f"baidu:{_fingerprint(self.endpoint, api_key, secret_key)}"
        self.tokens.register(self.token_key, self._fetch_token, refresh_margin=token_refresh_margin)
        self.limiter = rate_limiter(api_key, qps, self.endpoint, getattr(self.tokens, "shared", None))
        self._session = make_session(self.http)

    @classmethod
    def from_config(cls, config: dict[str, Any], tokens: TokenService | None = None) -> BaiduClient | None:
        """A client from the whole validated config (``providers.baidu``, ``http``, ``workers.io``).

        ``None`` when the API key or the secret key is empty (the feature is off, not broken).
        """
        section = (config.get("providers") or {}).get("baidu") or {}
        if not section.get("api_key") or not section.get("secret_key"):
            return None
        return cls(
            section["api_key"],
            section["secret_key"],
            endpoint=section.get("endpoint") or DEFAULT_ENDPOINT,
            qps=float(section.get("qps") or 2),
            h5_base_url=section.get("h5_base_url") or DEFAULT_H5_BASE_URL,
            token_refresh_margin=float(section.get("token_refresh_margin", 86400)),
            http=HttpSettings.from_config(config),
            tokens=tokens,
        )

    def __repr__(self) -> str:
        return f"BaiduClient(endpoint={self.endpoint!r}, qps={self.limiter.qps:g})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # -- OCR ----------------------------------------------------------------------------------------

    def ocr(
        self,
        image: bytes,
        *,
        api: str = "general_basic",
        language_type: str = "CHN_ENG",
        detect_direction: bool = False,
        paragraph: bool = False,
        probability: bool = False,
    ) -> OcrResult:
        """Recognise the text in ``image`` (encoded bytes, already prepared with ``OCR_LIMITS``).

        ``api``: ``general_basic`` (standard), ``general`` (with positions), ``accurate_basic`` or
        ``accurate`` (high accuracy, with positions).
        """
        if api not in OCR_APIS:
            raise ValueError(f"unknown Baidu OCR api {api!r} (one of {', '.join(OCR_APIS)})")
        b64 = _base64(image, MAX_OCR_BASE64 + (2 * 1024 * 1024 if api.startswith("accurate") else 0))
        form = {
            "image": b64,
            "language_type": language_type,
            "detect_direction": _flag(detect_direction),
            "paragraph": _flag(paragraph),
            "probability": _flag(probability),
        }
        body = self._call(OCR_PATH + api, "ocr", f"OCR {api}", data=form)
        lines = []
        for item in body.get("words_result") or []:
            loc = item.get("location")
            box = (int(loc["left"]), int(loc["top"]), int(loc["width"]), int(loc["height"])) if loc else None
            prob = item.get("probability")
            if isinstance(prob, dict):
                prob = prob.get("average")
            lines.append(OcrLine(str(item.get("words", "")), box, float(prob) if prob is not None else None))
        direction = body.get("direction")
        return OcrResult(lines, int(direction) if direction is not None else None, body.get("log_id"))

    # -- face match ---------------------------------------------------------------------------------

    def face_match(
        self,
        a: bytes,
        b: bytes,
        *,
        face_type: str = "LIVE",
        quality_control: str = "NONE",
        liveness_control: str = "NONE",
    ) -> FaceMatch:
        """Compare the faces in two images (encoded bytes, prepared with ``FACE_LIMITS``): score 0–100."""
        images = [
            {
                "image": _base64(img, MAX_FACE_BASE64),
                "image_type": "BASE64",
                "face_type": face_type,
                "quality_control": quality_control,
                "liveness_control": liveness_control,
            }
            for img in (a, b)
        ]
        body = self._call(MATCH_PATH, "face", "face match", json=images)
        result = body.get("result") or {}
        if "score" not in result:
            raise ERRORS.error(
                TemporarilyUnavailable, "Baidu face match: answer without result.score", code="no_result"
            )
        tokens = [str(f.get("face_token", "")) for f in result.get("face_list") or []]
        return FaceMatch(float(result["score"]), tokens, body.get("log_id"))

    # -- H5 real-name verification ("faceprint") ------------------------------------------------------

    def generate_verify_token(self, plan_id: str) -> str:
        """A new single-use ``verify_token`` for plan ``plan_id`` (valid 2 hours)."""
        result = self._faceprint("verifyToken/generate", {"plan_id": plan_id})
        token = (result or {}).get("verify_token") if isinstance(result, dict) else None
        if not token:
            raise ERRORS.error(
                TemporarilyUnavailable, "Baidu verifyToken/generate: answer without verify_token", code="no_result"
            )
        return str(token)

    def submit_idcard(self, verify_token: str, id_name: str, id_no: str, certificate_type: int = 0) -> None:
        """Pre-fill the identity (name and ID number) the verification checks against."""
        body = {"verify_token": verify_token, "id_name": id_name, "id_no": id_no, "certificate_type": certificate_type}
        self._faceprint("idcard/submit", body)

    def result_simple(self, verify_token: str) -> dict[str, Any]:
        """``result/simple``: ``{"image": <URL of the captured face>, …}``."""
        return self._faceprint("result/simple", {"verify_token": verify_token}) or {}

    def result_detail(self, verify_token: str) -> VerifyDetail:
        """``result/detail``: scores and the identity. Decide the outcome from this, never from a redirect."""
        body = self._faceprint("result/detail", {"verify_token": verify_token}, whole=True)
        result = body.get("result") or {}
        verdict = result.get("verify_result") or {}
        confirm = result.get("idcard_confirm") or {}
        ocr = result.get("idcard_ocr_result") or {}
        name = confirm.get("name") or ocr.get("name")
        number = confirm.get("idcard_number") or ocr.get("id_card_number")
        return VerifyDetail(
            score=_float(verdict.get("score")),
            liveness_score=_float(verdict.get("liveness_score")),
            spoofing=_float(verdict.get("spoofing")),
            name=name or None,
            id_number=number or None,
            log_id=body.get("log_id"),
        )

    def result_stat(self, verify_token: str) -> dict[str, Any]:
        """``result/stat``: per-step request counts by error code, as Baidu returns them."""
        return self._faceprint("result/stat", {"verify_token": verify_token}) or {}

    def h5_url(self, verify_token: str, success_url: str, failed_url: str, *, base: str | None = None) -> str:
        """The page the user opens on a phone; ``success_url``/``failed_url`` must be absolute http(s) URLs.

        ``base``: another H5 page host (some plans use one) instead of the client's ``h5_base_url``.
        """
        for name, url in (("success_url", success_url), ("failed_url", failed_url)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{name} must be an absolute http(s) URL")
        query = urlencode({"token": verify_token, "successUrl": success_url, "failedUrl": failed_url}, quote_via=quote)
        base = base or self.h5_base_url
        return f"{base}{'&' if '?' in base else '?'}{query}"

    # -- video liveness and person verification -------------------------------------------------------

    def liveness_session_code(self, min_code_length: int = 4, max_code_length: int = 4) -> LivenessSession:
        """``faceliveness/sessioncode``: a code to read aloud in the video and its session (valid 5 minutes)."""
        body = {"min_code_length": min_code_length, "max_code_length": max_code_length}
        result = self._call(LIVENESS_PATH + "sessioncode", "liveness", "faceliveness sessioncode", json=body)
        inner = result.get("result") or {}
        if not inner.get("session_id") or not inner.get("code"):
            raise ERRORS.error(
                TemporarilyUnavailable,
                "Baidu faceliveness sessioncode: answer without session_id and code",
                code="no_result",
            )
        return LivenessSession(str(inner["session_id"]), str(inner["code"]))

    def video_liveness(self, session_id: str, video: bytes) -> VideoLiveness:
        """``faceliveness/verify``: the video (mp4) recorded for ``session_id``. The video is checked for size
        before any call; Baidu's refusals (no face 216501, several faces 216507, expired session 216502, …) raise
        the error kind their ``code`` means (:data:`ERRORS`), with that ``code``."""
        if not video:
            raise ERRORS.error(ProviderError, "empty video", code="empty", key="error.provider_request")
        encoded = base64.b64encode(video).decode("ascii")
        if len(encoded) > MAX_VIDEO_BASE64:
            raise ERRORS.error(
                ProviderError, f"video is {len(encoded)} bytes in base64, over {MAX_VIDEO_BASE64}", code="too_large"
            )
        form = {"session_id": session_id, "video_base64": encoded}
        answer = self._call(LIVENESS_PATH + "verify", "liveness", "faceliveness verify", data=form)
        result = answer.get("result") or {}
        code = result.get("code") or {}
        pictures = [p for p in result.get("pic_list") or [] if isinstance(p, dict) and p.get("pic")]
        best = max(pictures, key=lambda p: _float(p.get("liveness_score")) or 0.0, default=None)
        frame = None
        if best is not None:
            try:
                frame = base64.b64decode(best["pic"])
            except (ValueError, TypeError):
                frame = None
        thresholds = {str(k): v for k, v in (result.get("thresholds") or {}).items() if _float(v) is not None}
        return VideoLiveness(
            score=_float(result.get("score")),
            thresholds={k: float(v) for k, v in thresholds.items()},
            code_create=str(code.get("create") or ""),
            code_identify=str(code.get("identify") or ""),
            best_frame=frame,
            frames=len(pictures),
            log_id=answer.get("log_id") or answer.get("serverlogid"),
        )

    def person_verify(
        self,
        image: bytes,
        id_card_number: str,
        name: str,
        *,
        quality_control: str = "NORMAL",
        liveness_control: str = "NONE",
    ) -> float:
        """``face/v3/person/verify``: the similarity (0–100; Baidu recommends 80) of the face in ``image`` with
        the authoritative photo of ``id_card_number`` / ``name`` (which go into the request body only)."""
        body = {
            "image": _base64(image, MAX_FACE_BASE64),
            "image_type": "BASE64",
            "id_card_number": id_card_number,
            "name": name,
            "quality_control": quality_control,
            "liveness_control": liveness_control,
        }
        answer = self._call(PERSON_VERIFY_PATH, "person", "person verify", json=body)
        score = _float((answer.get("result") or {}).get("score"))
        if score is None:
            raise ERRORS.error(
                TemporarilyUnavailable, "Baidu person verify: answer without result.score", code="no_result"
            )
        return score

    # -- internals ------------------------------------------------------------------------------------

    def _faceprint(self, path: str, body: dict[str, Any], *, whole: bool = False) -> Any:
        answer = self._call(FACEPRINT_PATH + path, "faceprint", f"faceprint {path}", json=body)
        return answer if whole else answer.get("result")

    def _fetch_token(self) -> tuple[str, float]:
        """The token source: client credentials → ``(access_token, expires_in)``; typed errors otherwise."""
        params = {"grant_type": "client_credentials", "client_id": self._api_key, "client_secret": self._secret_key}
        try:
            response = self._session.post(self.endpoint + TOKEN_PATH, params=params)
        except requests.RequestException as exc:
            raise ERRORS.unanswered(exc, "token request", endpoint=self.endpoint, retries=self.http.retries) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ERRORS.error(
                TemporarilyUnavailable,
                f"Baidu token endpoint answered HTTP {response.status_code} without JSON",
                code=response.status_code,
            )
        token = body.get("access_token")
        if token:
            register_secret(token)
            lifetime = _float(body.get("expires_in")) or DEFAULT_TOKEN_LIFETIME
            return str(token), lifetime
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
        if response.status_code >= 500:
            raise ERRORS.error(
                TemporarilyUnavailable, f"Baidu token endpoint answered HTTP {response.status_code}", code=error or None
            )
        if error == "invalid_client" and "unknown client id" in description.lower():
            raise ERRORS.error(
                ProviderMisconfigured,
                "Baidu rejected the API Key (invalid_client: unknown client id): "
                "check providers.baidu.api_key (the app's API Key in the Baidu AI console)",
                code=error,
            )
        if error == "invalid_client" and "authentication failed" in description.lower():
            raise ERRORS.error(
                ProviderMisconfigured,
                "Baidu rejected the Secret Key (invalid_client: Client authentication failed): "
                "the API Key is known; check providers.baidu.secret_key",
                code=error,
            )
        raise ERRORS.error(
            ProviderMisconfigured,
            f"Baidu refused the token request (HTTP {response.status_code}, {error or 'no error'}: {description})",
            code=error or response.status_code,
        )

    def _call(self, path: str, product: str, what: str, **payload: Any) -> dict[str, Any]:
        """POST ``payload`` (``data=`` form or ``json=``) to ``path``; the parsed success answer, or a typed error."""
        retries = self.http.retries
        attempt = 0
        token_refreshed = False
        while True:
            token = self.tokens.get(self.token_key)
            metrics_of(self).qps_wait("baidu", self.limiter.acquire())
            body = self._send(path, what, token, payload)
            code, message = (None, "not JSON") if body is None else _error_of(body)
            if code is None and body is not None:
                return body
            if code in TOKEN_CODES and not token_refreshed:
                token_refreshed = True
                self.tokens.invalidate(self.token_key, token)
                log.info("Baidu %s: token rejected (error %s), fetching a new one and retrying once", what, code)
                continue
            limit = min(retries, 1) if code in RETRY_ONCE_CODES else retries
            if (body is None or _retryable(code)) and attempt < limit:
                attempt += 1
                delay = self.http.backoff_delay(attempt)
                log.warning(
                    "Baidu %s: error %s (%s), retry %d/%d in %.2f s", what, code, message, attempt, retries, delay
                )
                time.sleep(delay)
                continue
            if body is None:
                raise ERRORS.error(
                    TemporarilyUnavailable,
                    f"Baidu {what}: answer was not JSON, {retries} retries did not help",
                    code="not_json",
                )
            raise self._error(code, message, product, what, body.get("log_id"), attempt)

    @metered("baidu", code=lambda body: "not_json" if body is None else _error_of(body)[0])
    def _send(self, path: str, what: str, token: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """One POST (with the transport retries of core.infra.http). ``None`` for a non-JSON 2xx/4xx answer."""
        try:
            response = self._session.post(self.endpoint + path, params={"access_token": token}, **payload)
        except requests.RequestException as exc:
            raise ERRORS.unanswered(exc, what, endpoint=self.endpoint, retries=self.http.retries) from None
        if response.status_code >= 500:
            raise ERRORS.error(
                TemporarilyUnavailable,
                f"Baidu {what}: HTTP {response.status_code} after {self.http.retries} retries",
                code=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            log.warning("Baidu %s: HTTP %d with a non-JSON body", what, response.status_code)
            return None
        return body if isinstance(body, dict) else None

    def _error(self, code: Code, message: str, product: str, what: str, log_id: Any, retries: int) -> ProviderError:
        where = f"Baidu {what}: error {code} ({message}), log_id {log_id}"
        return ERRORS.from_code(code, where, endpoint=self.endpoint, api=API_NAMES[product], retries=retries)


def _retryable(code: Code) -> bool:
    return code in RETRY_CODES


def _error_of(body: dict[str, Any]) -> tuple[int | str | None, str]:
    """``(code, message)`` of an answer in either shape; code ``None`` for a success."""
    if body.get("error_code") not in (None, 0, "0"):
        return _code(body["error_code"]), str(body.get("error_msg") or "")
    if body.get("success") is False:
        return _code(body.get("code")), str(body.get("message") or "")
    if body.get("err_no") not in (None, 0, "0"):  # the faceliveness paths answer err_no / err_msg
        return _code(body["err_no"]), str(body.get("err_msg") or "")
    return None, ""


def _code(value: Any) -> int | str | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value) if value is not None else "unknown"


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _base64(image: bytes, limit: int) -> str:
    """``image`` as base64, or :class:`ProviderBadImage` (before any network call) if empty or too large."""
    if not image:
        raise ERRORS.error(ProviderBadImage, "empty image", key="error.image_not_image", code="empty")
    encoded = base64.b64encode(image).decode("ascii")
    if len(encoded) > limit:
        raise ERRORS.error(
            ProviderBadImage,
            f"image is {len(encoded)} bytes in base64, over Baidu's {limit}: prepare() it first",
            key="error.image_too_large",
            code="too_large",
        )
    return encoded
