"""The providers of verification by video note (``plugins.realname.method: video_note``): a code to read aloud and
the check of the note that reads it, for Tencent Cloud FaceID and Baidu (:mod:`plugins.realname.notes` runs the
conversation around them)."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any

from core.contract.errors import ProviderError
from plugins.realname.providers import CANNOT_ASK, Identity, Launch, RealnameProvider, Result

log = logging.getLogger("plugins.realname.notes")

#: Failures the user can fix by recording again (a new code each time).
RETRY_REASONS = ("code", "no_face", "faces", "quality", "video")
#: Every reason a check can give, for the catalogue (``realname.note.reason.<reason>``).
REASONS = (*RETRY_REASONS, "liveness", "mismatch", "identity", "other")


@dataclass(frozen=True)
class Code:
    """A code to read aloud: the digits, the provider's session (Baidu; ``""`` for Tencent), its validity (s)."""

    code: str
    session: str
    valid_for: float


@dataclass(frozen=True)
class NoteResult:
    """What the provider said of a note: ``passed``, else ``reason`` (one of :data:`REASONS`), with the face
    similarity (``score``, 0–100) and the liveness score when reported."""

    passed: bool
    reason: str = ""
    score: float | None = None
    liveness: float | None = None


class NoteProvider(RealnameProvider):
    """A provider that checks a video note in one call (:meth:`check`) after issuing a code (:meth:`new_code`).

    It is a :class:`RealnameProvider` only so that the rest of the plugin (``/verify status``, the job,
    ``/plugins``) treats its sessions like the others: a note's session is decided when it is created, so there
    is never a page to launch or a result to ask for later.
    """

    identity_in_result = False
    #: the ``provider`` column of its sessions
    session_name = ""
    #: the largest video the provider takes, in bytes (before base64)
    max_video_bytes = 0

    @abc.abstractmethod
    def new_code(self) -> Code:
        """A fresh code to read aloud."""

    @abc.abstractmethod
    def check(self, code: Code, identity: Identity, video: bytes) -> NoteResult:
        """The provider's verdict on ``video`` for ``code`` and ``identity`` (blocking)."""

    def start(self, return_url: str, identity: Identity | None = None) -> Launch:
        """Not used: a note is checked in the chat, there is no page (a programming error if called)."""
        raise TypeError("video-note verification launches no page")

    def link(self, reference: str, return_url: str) -> None:
        """None: there is no page to send again."""
        return None

    def result(self, reference: str, callback_code: str | None = None) -> Result | None:
        """None: a note's session is decided when it is created (an older H5 session left pending expires)."""
        return None

    def stats(self, reference: str) -> dict[str, Any]:
        """Nothing to ask the provider about afterwards."""
        return {}


class TencentNotes(NoteProvider):
    """Tencent Cloud FaceID API 3.0: ``GetLiveCode``, then ``LivenessRecognition`` (``LivenessType: LIP``).
    Passed when Tencent answers ``Success`` and ``Sim ≥ min_sim`` (Tencent: ≥ 70 is the same person)."""

    name = "tencent"
    session_name = "tencent-note"

    def __init__(self, client: Any, *, min_sim: float = 70.0, code_seconds: float = 300.0) -> None:
        from core.providers.tencent import MAX_VIDEO_BASE64

        self.client = client
        self.min_sim = min_sim
        self.code_seconds = code_seconds
        self.max_video_bytes = MAX_VIDEO_BASE64 // 4 * 3

    def new_code(self) -> Code:
        return Code(self.client.get_live_code(), "", self.code_seconds)

    def check(self, code: Code, identity: Identity, video: bytes) -> NoteResult:
        answer = self.client.liveness_recognition(identity.id_number, identity.name, video, code.code)
        if not answer.success:
            return NoteResult(False, answer.reason, answer.sim)
        if answer.sim is None or answer.sim < self.min_sim:
            return NoteResult(False, "mismatch", answer.sim)
        return NoteResult(True, "", answer.sim)

    def describe(self) -> str:
        return f"tencent FaceID video note (LIP); passed when Tencent says Success and Sim ≥ {self.min_sim:g}"


#: Baidu error codes of ``faceliveness/verify`` and ``person/verify`` that are outcomes, by reason.
BAIDU_REASONS: dict[int, str] = {
    216501: "no_face",  # no face found in the video
    216507: "faces",  # several faces in the video
    216509: "code",  # the voice in the video cannot be recognised
    216502: "code",  # the session (and its code) expired
    216508: "video",  # no video information
    216433: "video",  # the video could not be parsed
    216434: "liveness",  # liveness check failed
    222202: "no_face",
    222203: "quality",
    223113: "quality",
    223114: "quality",
    223115: "quality",
    223116: "quality",
    223120: "liveness",
    222350: "identity",  # the authoritative photo is missing or poor
    222351: "identity",  # no such ID number, or the name and number do not match
    222354: "identity",
    222355: "identity",
    222360: "identity",
    222356: "mismatch",
}


class BaiduNotes(NoteProvider):
    """Baidu: ``faceliveness/sessioncode``, ``faceliveness/verify`` with the video, then the best frame against the
    authoritative photo with ``face/v3/person/verify``. Passed when the code Baidu heard is the code asked, the
    liveness score reaches the threshold Baidu returns under ``liveness_threshold`` (``frr_1e-3``: 0.3), and the
    person-verify score reaches ``min_score`` (Baidu: 80)."""

    name = "baidu"
    session_name = "baidu-note"

    def __init__(
        self, client: Any, *, liveness_threshold: str = "frr_1e-3", min_score: float = 80.0, code_seconds: float = 300.0
    ) -> None:
        from core.providers.baidu import MAX_VIDEO_BASE64

        self.client = client
        self.liveness_threshold = liveness_threshold
        self.min_score = min_score
        self.code_seconds = min(code_seconds, 300.0)  # Baidu's session: 5 minutes
        self.max_video_bytes = MAX_VIDEO_BASE64 // 4 * 3

    def new_code(self) -> Code:
        session = self.client.liveness_session_code()
        return Code(session.code, session.session_id, self.code_seconds)

    def check(self, code: Code, identity: Identity, video: bytes) -> NoteResult:
        try:
            liveness = self.client.video_liveness(code.session, video)
        except CANNOT_ASK:
            raise
        except ProviderError as err:
            return NoteResult(False, self._reason(err))
        if liveness.code_identify != code.code or liveness.code_create not in ("", code.code):
            return NoteResult(False, "code", None, liveness.score)
        threshold = liveness.thresholds.get(self.liveness_threshold)
        if liveness.score is None or threshold is None or liveness.score < threshold:
            return NoteResult(False, "liveness", None, liveness.score)
        if not liveness.best_frame:
            return NoteResult(False, "no_face", None, liveness.score)
        try:
            score = self.client.person_verify(liveness.best_frame, identity.id_number, identity.name)
        except CANNOT_ASK:
            raise
        except ProviderError as err:
            return NoteResult(False, self._reason(err), None, liveness.score)
        return NoteResult(score >= self.min_score, "" if score >= self.min_score else "mismatch", score, liveness.score)

    @staticmethod
    def _reason(err: ProviderError) -> str:
        code = getattr(err, "code", None)
        reason = BAIDU_REASONS.get(code, "other") if isinstance(code, int) else "other"
        log.info("realname: Baidu refused a note: %s (%s)", code, reason)
        return reason

    def describe(self) -> str:
        return (
            f"baidu video note; passed when the code is heard, liveness ≥ Baidu's {self.liveness_threshold} "
            f"threshold and person verify ≥ {self.min_score:g}"
        )


def make_note_provider(config: dict[str, Any], services: Any) -> NoteProvider | None:
    """The note provider ``plugins.realname.provider`` names, or None when its credentials are not configured."""
    seconds = config["code_minutes"] * 60
    client = services.provider(config["provider"])
    if client is None:
        return None
    if config["provider"] == "tencent":
        return TencentNotes(client, min_sim=config["min_sim"], code_seconds=seconds)
    return BaiduNotes(
        client,
        liveness_threshold=config["liveness_threshold"],
        min_score=config["min_person_score"],
        code_seconds=seconds,
    )
