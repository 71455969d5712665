"""Tencent Cloud FaceID (API 3.0) client: a digit code to read aloud, then lip-reading liveness against the
authoritative ID photo. Not the WeBank H5 flow (:mod:`core.providers.webank`): Tencent Cloud's own API,
``faceid.tencentcloudapi.com``, version ``2018-03-01``, one signed HTTPS POST of a JSON body per action.

A plain synchronous, thread-safe library class, usable from a script without the bot::

    client = TencentFaceId(secret_id, secret_key)
    code = client.get_live_code()                                    # "4821": the user reads it aloud
    check = client.liveness_recognition(id_card, name, video, code)  # LivenessCheck(result, sim, ...)

What every call does:

1. signs the request with **TC3-HMAC-SHA256** (:func:`tc3_authorization`): canonical request (method, ``/``,
   empty query, the ``content-type`` and ``host`` headers, the body's SHA-256), string to sign (algorithm,
   timestamp, ``<UTC date>/faceid/tc3_request``, the canonical request's SHA-256), key = the HMAC chain
   ``"TC3" + SecretKey`` → date → service → ``tc3_request``; Tencent refuses a signature older than 5 minutes;
2. POSTs through a pooled session (:mod:`core.infra.http`: timeouts, transport retries for connection errors,
   timeouts and 5xx);
3. reads ``Response``: ``Response.Error {Code, Message}`` is an error, mapped to the kinds of
   :mod:`core.contract.errors` by :func:`classify` (bad credentials, product not enabled, account in arrears →
   :class:`ProviderMisconfigured`, which alerts the admins; quota → :class:`QuotaExhausted`;
   ``RequestLimitExceeded`` → retried with backoff, then :class:`RateLimited`; ``InternalError`` and
   the ``…SystemError`` codes → retried, then :class:`TemporarilyUnavailable`). ``LivenessRecognition``'s
   ``FailedOperation.*`` codes are not errors but outcomes (the code was not read, no face, not the same
   person, …): :meth:`TencentFaceId.liveness_recognition` returns them in a :class:`LivenessCheck` with
   their :data:`REASONS` category.

Only the ``RequestId`` of an answer is logged, never a body. The secret key and id are registered with
:func:`core.infra.redact.register_secret`; names, ID numbers and the video are only ever in a request body, and
the best frame Tencent returns is kept out of every ``repr``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from core.contract.errors import (
    ProviderError,
    ProviderMisconfigured,
    QuotaExhausted,
    RateLimited,
    TemporarilyUnavailable,
)
from core.contract.fields import Field
from core.infra.http import HttpSettings, make_session
from core.infra.metrics import Metrics, metered
from core.infra.redact import register_secret
from core.providers.errors import Vendor

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://faceid.tencentcloudapi.com"
DEFAULT_REGION = "ap-guangzhou"
SERVICE = "faceid"
VERSION = "2018-03-01"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
#: Tencent refuses a request whose ``X-TC-Timestamp`` is further than this from its clock (seconds).
SIGNATURE_TTL = 300
#: ``LivenessRecognition``: the video's base64 may be at most 8 MB (mp4, avi or flv).
MAX_VIDEO_BASE64 = 8 * 1024 * 1024
#: Tencent's recommended ``Sim`` threshold (≥ 70: the same person; older pages: 70 ≈ FAR 1/1000, 80 ≈ 1/10000).
RECOMMENDED_SIM = 70.0

#: What the client can do, for :func:`core.providers.choose_engine`.
CAPABILITIES = frozenset({"video_liveness"})

#: ``providers.tencent`` in config.yaml.
SCHEMA = {
    "secret_id": Field(str, default="", secret=True, help="Tencent Cloud API SecretId (CAM → API keys)"),
    "secret_key": Field(str, default="", secret=True, help="Tencent Cloud API SecretKey"),
    "endpoint": Field(str, default=DEFAULT_ENDPOINT, url=True, help="FaceID API 3.0 endpoint"),
    "region": Field(str, default=DEFAULT_REGION, help="X-TC-Region (FaceID: ap-guangzhou)"),
}

#: ``FailedOperation.*`` codes of ``LivenessRecognition`` that are outcomes, by what went wrong:
#: ``code`` (the digits were not read, or not heard), ``no_face``, ``faces`` (several), ``quality`` (light, blur,
#: a covered or incomplete face), ``liveness`` (not a live person), ``mismatch`` (not the person of the ID
#: record), ``identity`` (no such record, or name and number do not belong together), ``video`` (the file).
REASONS: dict[str, str] = {
    "FailedOperation.LipVoiceRecognize": "code",
    "FailedOperation.LipVoiceDetect": "code",
    "FailedOperation.LipVoiceLow": "code",
    "FailedOperation.LipMoveSmall": "code",
    "FailedOperation.LipNetFailed": "code",
    "FailedOperation.LifePhotoDetectNoFaces": "no_face",
    "FailedOperation.ActionNodetectFace": "no_face",
    "FailedOperation.SilentFaceDetectFail": "no_face",
    "FailedOperation.LifePhotoDetectFaces": "faces",
    "FailedOperation.SilentMultiFaceFail": "faces",
    "FailedOperation.ActionLightDark": "quality",
    "FailedOperation.ActionLightStrong": "quality",
    "FailedOperation.ActionFaceClose": "quality",
    "FailedOperation.ActionFaceFar": "quality",
    "FailedOperation.LifePhotoPoorQuality": "quality",
    "FailedOperation.LipVideoQuaility": "quality",  # sic: Tencent's spelling
    "FailedOperation.LipFaceIncomplete": "quality",
    "FailedOperation.PoorImageQuality": "quality",
    "FailedOperation.ImageBlur": "quality",
    "FailedOperation.CoveredFace": "quality",
    "FailedOperation.IncompleteFace": "quality",
    "FailedOperation.SilentFaceQualityFail": "quality",
    "FailedOperation.SilentFaceWithMaskFail": "quality",
    "FailedOperation.LivessDetectFail": "liveness",
    "FailedOperation.LivessDetectFake": "liveness",
    "FailedOperation.LifePhotoDetectFake": "liveness",
    "FailedOperation.SilentDetectFail": "liveness",
    "FailedOperation.SilentPictureLiveFail": "liveness",
    "FailedOperation.SilentEyeLiveFail": "liveness",
    "FailedOperation.SilentMouthLiveFail": "liveness",
    "FailedOperation.SilentThreshold": "liveness",
    "FailedOperation.CompareLowSimilarity": "mismatch",
    "FailedOperation.CompareFail": "mismatch",
    "FailedOperation.IdNameMisMatch": "identity",
    "FailedOperation.IdNoExistSystem": "identity",
    "FailedOperation.IdPhotoNoExist": "identity",
    "FailedOperation.IdPhotoPoorQuality": "identity",
    "FailedOperation.IdFormatError": "identity",
    "FailedOperation.NameFormatError": "identity",
    "FailedOperation.VideoDecodeFailed": "video",
    "FailedOperation.VideoDurationExceeded": "video",
    "FailedOperation.LipSizeError": "video",
    "FailedOperation.LipVideoInvalid": "video",
    "FailedOperation.SilentTooShort": "video",
    "FailedOperation.CompressVideoError": "video",
    "FailedOperation.LivessBestFrameError": "video",
}
#: Codes that are Tencent's own trouble: retried ``http.retries`` times, then :class:`TemporarilyUnavailable`.
TRANSIENT = frozenset(
    {
        "InternalError",
        "InternalError.UnKnown",
        "InternalError.EncryptSystemError",
        "FailedOperation.LivessSystemError",
        "FailedOperation.LivessUnknownError",
        "FailedOperation.CompareSystemError",
        "FailedOperation.DetectEngineSystemError",
        "FailedOperation.CompareLibServiceUnavailable",
        "FailedOperation.IdPhotoSystemNoanswer",
        "FailedOperation.DbError",
        "FailedOperation.UnKnown",
        "FailedOperation.DecryptSystemError",
        "FailedOperation.EncryptSystemError",
        "FailedOperation.DownLoadError",
        "FailedOperation.DownLoadTimeoutError",
        "ServiceUnavailable",
        "ResourceUnavailable",
    }
)
RATE_LIMIT = frozenset({"RequestLimitExceeded", "RequestLimitExceeded.UinLimitExceeded"})


# -- errors --------------------------------------------------------------------------------------------

#: Tencent's failures are the contract's kinds (``vendor == "tencent"``, ``code`` its ``Error.Code`` or a transport
#: name); which kind a code means is :func:`classify`'s (Tencent's codes are families, matched by prefix).
ERRORS = Vendor("tencent", "Tencent")


# -- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LivenessCheck:
    """``LivenessRecognition``'s answer: ``result`` is ``Success`` or a ``FailedOperation.*`` code.

    ``reason`` is the :data:`REASONS` category of a failure (``other`` for an unlisted one, ``""`` on success);
    ``sim`` the similarity to the ID photo (0–100) when reported. The best frame stays out of ``repr``.
    """

    result: str
    description: str
    sim: float | None
    request_id: str
    best_frame: bytes | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        """Tencent's verdict: live, the code read, the same person as the ID record."""
        return self.result == "Success"

    @property
    def reason(self) -> str:
        """What went wrong, as a category of :data:`REASONS` (``""`` when it succeeded)."""
        return "" if self.success else REASONS.get(self.result, "other")


# -- signing ---------------------------------------------------------------------------------------------


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def utc_date(timestamp: int) -> str:
    """The ``YYYY-MM-DD`` (UTC) of ``timestamp``: the date of the credential scope."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")


def tc3_signature(
    secret_key: str, host: str, body: bytes, timestamp: int, *, content_type: str = CONTENT_TYPE, service: str = SERVICE
) -> str:
    """The hex TC3-HMAC-SHA256 signature of a POST of ``body`` to ``/`` on ``host`` at ``timestamp``."""
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{content_type.strip().lower()}\nhost:{host.strip().lower()}\n",
            "content-type;host",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    date = utc_date(timestamp)
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join([ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode("utf-8"), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    host: str,
    body: bytes,
    timestamp: int,
    *,
    content_type: str = CONTENT_TYPE,
    service: str = SERVICE,
) -> str:
    """The ``Authorization`` header of that request."""
    signature = tc3_signature(secret_key, host, body, timestamp, content_type=content_type, service=service)
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"


def classify(code: str) -> type[ProviderError] | None:
    """The error kind of an ``Error.Code``; None for a ``FailedOperation`` that is an outcome."""
    if code in REASONS:
        return None
    if code in RATE_LIMIT or code.startswith("RequestLimitExceeded") or code == "FailedOperation.RequestLimitExceeded":
        return RateLimited
    if code in TRANSIENT or code.startswith("InternalError"):
        return TemporarilyUnavailable
    if code.startswith(("AuthFailure", "UnauthorizedOperation", "InvalidAction", "UnsupportedRegion")):
        if code == "UnauthorizedOperation.Arrears":
            return QuotaExhausted
        return ProviderMisconfigured
    if code.startswith(("ResourceInsufficient", "LimitExceeded")) or code in (
        "FailedOperation.IdentityAuthLimitExceeded",
        "ResourceUnavailable.Arrears",
    ):
        return QuotaExhausted
    return ProviderError


#: What the admin reads for the codes that need them.
ADMIN_HINTS = {
    "AuthFailure.SecretIdNotFound": "the SecretId is unknown: check providers.tencent.secret_id",
    "AuthFailure.InvalidSecretId": "the SecretId is malformed: check providers.tencent.secret_id",
    "AuthFailure.SignatureFailure": "the signature is wrong: check providers.tencent.secret_key",
    "AuthFailure.SignatureExpire": "the signature is stale: the machine's clock is off by over 5 minutes",
    "AuthFailure.UnauthorizedOperation": "this key may not call FaceID: grant it QcloudFaceIDFullAccess in CAM",
    "UnauthorizedOperation.Nonactivated": "FaceID is not activated for this account (console: 人脸核身)",
    "UnauthorizedOperation.Arrears": "the account is in arrears",
    "InvalidAction": "unknown action: is providers.tencent.endpoint the FaceID API 3.0 host?",
}


# -- the client --------------------------------------------------------------------------------------------


class TencentFaceId:
    """Tencent Cloud FaceID API 3.0 client: see the module docstring. Thread-safe; create one and share it."""

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        region: str = DEFAULT_REGION,
        http: HttpSettings | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        if not secret_id or not secret_key:
            raise ValueError("TencentFaceId needs a SecretId and a SecretKey")
        register_secret(secret_id)
        register_secret(secret_key)
        self._secret_id = secret_id
        self._secret_key = secret_key
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.region = region
        self.http = http or HttpSettings()
        self.clock = clock
        self.metrics = metrics  # the bot's, when it made the client (core.infra.metrics.metrics_of: else standalone)
        self._session = make_session(self.http)

    @classmethod
    def from_config(cls, config: dict[str, Any], tokens: Any = None) -> TencentFaceId | None:
        """A client from the whole validated config (``providers.tencent``, ``http``, ``workers.io``).

        ``None`` when the SecretId or the SecretKey is empty (the feature is off, not broken). API 3.0 signs every
        request instead of fetching a token, so ``tokens`` gives only the bot's metrics.
        """
        section = (config.get("providers") or {}).get("tencent") or {}
        if not section.get("secret_id") or not section.get("secret_key"):
            return None
        return cls(
            section["secret_id"],
            section["secret_key"],
            endpoint=section.get("endpoint") or DEFAULT_ENDPOINT,
            region=section.get("region") or DEFAULT_REGION,
            http=HttpSettings.from_config(config),
            metrics=getattr(tokens, "metrics", None),
        )

    def __repr__(self) -> str:
        return f"TencentFaceId(endpoint={self.endpoint!r}, region={self.region!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # -- the actions ----------------------------------------------------------------------------------

    def get_live_code(self) -> str:
        """``GetLiveCode``: the digits the user reads aloud in the video (``ValidateData`` later)."""
        response = self._call("GetLiveCode", {})
        code = response.get("LiveCode")
        if not code:
            raise ERRORS.error(TemporarilyUnavailable, "Tencent GetLiveCode: answer without LiveCode", code="no_result")
        return str(code)

    def liveness_recognition(
        self, id_card: str, name: str, video: bytes, validate_data: str, *, liveness_type: str = "LIP"
    ) -> LivenessCheck:
        """``LivenessRecognition``: the video (mp4, at most :data:`MAX_VIDEO_BASE64` in base64) of the person
        of ``id_card`` / ``name`` reading ``validate_data`` aloud. A ``FailedOperation`` outcome is returned,
        not raised; the video is checked for size before any call."""
        if not video:
            raise ERRORS.error(ProviderError, "empty video", code="empty", key="error.provider_request")
        encoded = base64.b64encode(video).decode("ascii")
        if len(encoded) > MAX_VIDEO_BASE64:
            raise ERRORS.error(
                ProviderError,
                f"video is {len(encoded)} bytes in base64, over Tencent's {MAX_VIDEO_BASE64}",
                code="too_large",
                key="error.provider_request",
            )
        payload = {
            "IdCard": id_card,
            "Name": name,
            "VideoBase64": encoded,
            "LivenessType": liveness_type,
            "ValidateData": validate_data,
        }
        response = self._call("LivenessRecognition", payload, outcome=True)
        request_id = str(response.get("RequestId") or "")
        error = response.get("Error")
        if isinstance(error, dict):  # a FailedOperation outcome (classify() said so)
            code = str(error.get("Code") or "")
            return LivenessCheck(code, str(error.get("Message") or ""), None, request_id)
        frame = response.get("BestFrameBase64")
        try:
            best = base64.b64decode(frame) if frame else None
        except (ValueError, TypeError):
            best = None
        return LivenessCheck(
            result=str(response.get("Result") or ""),
            description=str(response.get("Description") or ""),
            sim=_float(response.get("Sim")),
            request_id=request_id,
            best_frame=best,
        )

    # -- internals ------------------------------------------------------------------------------------

    def _call(self, action: str, payload: dict[str, Any], *, outcome: bool = False) -> dict[str, Any]:
        """One action (signed afresh for each try): its ``Response``, or a typed error. ``outcome``: an
        ``Error`` whose code is an outcome (:data:`REASONS`) is returned inside the ``Response``."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        attempt = 0
        while True:
            response = self._send(action, body)
            error = response.get("Error")
            if not isinstance(error, dict):
                return response
            code = str(error.get("Code") or "unknown")
            message = str(error.get("Message") or "")
            request_id = response.get("RequestId")
            kind = classify(code)
            if kind is None and outcome:
                log.info("Tencent %s: %s (RequestId %s)", action, code, request_id)
                return response
            kind = kind or ProviderError
            if kind in (RateLimited, TemporarilyUnavailable) and attempt < self.http.retries:
                attempt += 1
                delay = self.http.backoff_delay(attempt)
                log.warning("Tencent %s: %s, retry %d/%d in %.2f s", action, code, attempt, self.http.retries, delay)
                time.sleep(delay)
                continue
            hint = ADMIN_HINTS.get(code, "")
            where = f"Tencent {action}: {code} ({message}), RequestId {request_id}"
            raise ERRORS.error(kind, f"{where}{': ' + hint if hint else ''}", code=code, key=_key(kind))

    @metered("tencent", code=lambda response: (response.get("Error") or {}).get("Code"))
    def _send(self, what: str, body: bytes) -> dict[str, Any]:
        """One signed POST (with the transport retries of core.infra.http): the ``Response`` object."""
        timestamp = int(self.clock())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": what,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": VERSION,
            "X-TC-Region": self.region,
            "Authorization": tc3_authorization(self._secret_id, self._secret_key, self.host, body, timestamp),
        }
        try:
            response = self._session.post(self.endpoint + "/", data=body, headers=headers)
        except requests.RequestException as exc:
            raise ERRORS.unanswered(exc, what, endpoint=self.endpoint, retries=self.http.retries) from None
        if response.status_code >= 500:
            raise ERRORS.unreadable(response.status_code, what, endpoint=self.endpoint, expected="a Response")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        inner = answer.get("Response") if isinstance(answer, dict) else None
        if not isinstance(inner, dict):
            raise ERRORS.unreadable(response.status_code, what, endpoint=self.endpoint, expected="a Response")
        return inner


def _key(kind: type[ProviderError]) -> str | None:
    """A refusal not covered by a more telling kind is "the provider refused the request"."""
    return "error.provider_request" if kind is ProviderError else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
