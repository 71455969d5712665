"""The outcome message of a verification: the verdict, the masked identity, the scores against the rule.

Names and ID numbers come in from the provider's answer and leave only masked (``柴*``,
``370***********5826``); nothing here logs or stores them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from core.contract.i18n import Catalogue
from plugins.realname.providers import Result
from plugins.realname.sessions import PASSED, Session


def mask_name(name: str) -> str:
    """The first character and a star for each other one (at least one): ``柴*``, ``张**``."""
    name = name.strip()
    return name[:1] + "*" * max(1, len(name) - 1) if name else ""


def mask_id_number(number: str) -> str:
    """First 3 and last 4 characters of an ID number of 10 or more (``370***********5826``), else the last 2."""
    number = number.strip()
    if len(number) >= 10:
        return number[:3] + "*" * (len(number) - 7) + number[-4:]
    if len(number) > 4:
        return "*" * (len(number) - 2) + number[-2:]
    return "*" * len(number)


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def updated(session: Session, state: str, result: Result | None) -> Session:
    """``session`` as it stands once ``result`` (when there is one) was recorded with ``state``."""
    if result is None:
        return session
    return dataclasses.replace(
        session, state=state, score=result.score, liveness=result.liveness, spoofing=result.spoofing
    )


def outcome(catalogue: Catalogue, lang: str, config: dict[str, Any], session: Session, result: Result | None) -> str:
    """The outcome message in ``lang``: verdict, masked identity, scores against the rule (``config``: the
    plugin's section), the reference. WeBank's shows only the verdict, similarity and liveness."""

    def t(key: str, **params: Any) -> str:
        return catalogue.text(lang, key, **params)

    passed = session.state == PASSED
    lines = [t("realname.passed" if passed else "realname.failed")]
    if session.provider == "webank":  # WeBank's verdict; similarity and liveness (0–100), nothing else
        lines.append(t("realname.webank.similarity", score=_num(session.score)))
        lines.append(t("realname.webank.liveness", liveness=_num(session.liveness)))
        return "\n".join(lines)
    if session.provider.endswith("-note"):  # a video note (plugins/realname/notes.py): similarity, reference
        lines.append(t("realname.identity_gone"))
        if session.score is not None:
            lines.append(t("realname.note.similarity", score=_num(session.score)))
        lines.append(t("realname.reference", session=session.id))
        return "\n".join(lines)
    if result is not None and (result.name or result.id_number):
        if result.name:
            lines.append(t("realname.name", name=mask_name(result.name)))
        if result.id_number:
            lines.append(t("realname.id_number", id_number=mask_id_number(result.id_number)))
    else:
        lines.append(t("realname.identity_gone"))
    lines.append(t("realname.score", score=_num(session.score), needed=_num(config["min_score"])))
    lines.append(t("realname.liveness", liveness=_num(session.liveness), needed=_num(config["min_liveness"])))
    lines.append(t("realname.spoofing", spoofing=_num(session.spoofing), allowed=_num(config["max_spoofing"])))
    if result is not None and result.failed_checks and not passed:
        checks = ", ".join(t(f"realname.check.{c}") for c in result.failed_checks)
        lines.append(t("realname.failed_checks", checks=checks))
    lines.append(t("realname.reference", session=session.id))
    return "\n".join(lines)
