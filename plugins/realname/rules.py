"""The outcome rules: one pure function per provider from its answer to ``pending | passed | failed(+reasons)``.

Each function is the decision table of docs/realname.md ("The outcome rules"), row by row; a table-driven
test walks every row. ``None`` means pending (not finished, ask again later); a :class:`Result` is the
outcome (``passed``, or failed with ``failed_checks`` naming why). "Cannot ask now" (quota, rate limit,
misconfiguration, service down) is not an answer: those errors are raised by the clients and never reach
these functions.

Nothing here does I/O, logs or keeps a name or an ID number (they pass through into :class:`Result`, whose
``repr`` hides them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Baidu ``result/detail`` error codes that are a finished, failed verification (face / real-name V3 errors the
#: H5 plan's steps answer; Baidu's face error code table), by the check they failed.
BAIDU_FAILED_CODES: dict[int, str] = {
    222202: "face",  # no face in the picture
    222203: "face",  # face could not be parsed
    223113: "face",  # face covered
    223114: "face",  # blurred
    223115: "face",  # bad lighting
    223116: "face",  # incomplete face
    223120: "liveness",  # liveness check failed
    222350: "identity",  # authoritative photo missing or of too low quality
    222351: "identity",  # ID number and name do not match, or no such ID number
    222354: "identity",  # no such ID number in the authoritative source
    222355: "identity",  # ID number known, no photo in the authoritative source
    222356: "score",  # the face does not match the authoritative photo well enough
    222360: "identity",  # ID number or name invalid
}


@dataclass(frozen=True)
class Result:
    """How a finished verification ended. ``name`` and ``id_number`` never appear in ``repr`` or storage.

    ``failed_checks`` names what did not pass (``score``, ``liveness``, ``spoofing``, ``identity``, ``face``,
    ``webank``, ``similarity``, ``live_rate``); empty when ``passed``.
    """

    passed: bool
    score: float | None
    liveness: float | None
    spoofing: float | None
    name: str | None = field(default=None, repr=False)
    id_number: str | None = field(default=None, repr=False)
    failed_checks: tuple[str, ...] = ()


def reported(value: float | None) -> float | None:
    """A score as reported: ``None`` when missing, and 0 too (Baidu's reserved fields answer 0: "not reported")."""
    return None if value is None or value == 0 else value


@dataclass(frozen=True)
class PassRule:
    """Baidu's pass rule: ``score ≥ min_score`` (similarity to the authoritative photo, 0–100; required),
    ``liveness ≥ min_liveness`` (0–1; checked only when reported: 0 or missing is "not reported") and
    ``spoofing ≤ max_spoofing`` (0–1; required: a missing value fails, fail closed).
    """

    min_score: float = 80.0
    min_liveness: float = 0.3
    max_spoofing: float = 0.00048

    def judge(
        self, score: float | None, liveness: float | None, spoofing: float | None
    ) -> tuple[bool, tuple[str, ...]]:
        """``(passed, failed checks)`` for these scores."""
        failed = []
        if score is None or score < self.min_score:
            failed.append("score")
        live = reported(liveness)
        if live is not None and live < self.min_liveness:
            failed.append("liveness")
        if spoofing is None or spoofing > self.max_spoofing:
            failed.append("spoofing")
        return not failed, tuple(failed)


def baidu_verdict(detail: Any, error_code: int | str | None, rule: PassRule) -> Result | None:
    """Baidu ``result/detail`` → pending (None) | a :class:`Result`.

    ``detail``: the client's ``VerifyDetail`` of a successful answer (None when it answered an error);
    ``error_code``: the error code of a refused query (None on success). Rows (docs/realname.md):

    - B1 success with a similarity ``score``: judged by ``rule`` (liveness 0 = not reported);
    - B2 success without ``verify_result`` or without a ``score``: pending (not finished; never passed on doubt);
    - B3 an error in :data:`BAIDU_FAILED_CODES`: failed, with that check;
    - B4 any other error code (e.g. 283414, "not finished"; undocumented codes): pending.
    """
    if error_code is not None:
        code = _int(error_code)
        if code in BAIDU_FAILED_CODES:
            return Result(False, None, None, None, failed_checks=(BAIDU_FAILED_CODES[code],))
        return None
    if detail is None or detail.score is None:
        return None
    passed, failed = rule.judge(detail.score, detail.liveness_score, detail.spoofing)
    return Result(
        passed=passed,
        score=detail.score,
        liveness=reported(detail.liveness_score),
        spoofing=detail.spoofing,
        name=detail.name,
        id_number=detail.id_number,
        failed_checks=failed,
    )


@dataclass(frozen=True)
class WebankRule:
    """Local thresholds on top of WeBank's verdict: ``similarity ≥ min_similarity`` and
    ``liveRate ≥ min_live_rate`` (both 0–100, checked only when reported; 0 = off, WeBank's own decides)."""

    min_similarity: float = 0.0
    min_live_rate: float = 0.0


def webank_verdict(record: Any, callback_code: str | None, rule: WebankRule) -> Result | None:
    """WeBank ``queryfacerecord`` → pending (None) | a :class:`Result`.

    ``record``: the client's ``FaceRecord`` (``code``, ``similarity``, ``live_rate``, ``has_record``);
    ``callback_code``: the ``code`` of a *signed* browser callback for this order, when one just came in
    (None otherwise). Rows (docs/realname.md):

    - W1 ``code`` "0": passed (same person, live), unless a reported score is under a local threshold;
    - W2 ``code`` ≠ "0" with a record (scores or ``occurredTime``): failed;
    - W3 ``code`` ≠ "0", no record, no signed callback yet: pending (the user has not finished);
    - W4 ``code`` ≠ "0", no record, a signed callback with ``code`` ≠ "0": failed (the page ended without a
      verification; WeBank keeps no record of an abandoned or refused attempt);
    - W5 ``code`` ≠ "0", no record, a signed callback with ``code`` "0": pending (the record is not written yet;
      a browser callback alone never passes anyone).
    """
    similarity, live_rate = reported(record.similarity), reported(record.live_rate)
    if record.code == "0":
        failed = []
        if similarity is not None and similarity < rule.min_similarity:
            failed.append("similarity")
        if live_rate is not None and live_rate < rule.min_live_rate:
            failed.append("live_rate")
        return Result(not failed, similarity, live_rate, None, failed_checks=tuple(failed))
    if record.has_record:
        return Result(False, similarity, live_rate, None, failed_checks=("webank",))
    if callback_code is not None and callback_code != "0":
        return Result(False, None, None, None, failed_checks=("webank",))
    return None


def _int(code: int | str) -> int | None:
    try:
        return int(code)
    except (TypeError, ValueError):
        return None
