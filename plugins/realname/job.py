"""The background job (``poll_seconds``): retention, then every pending session asked about once, its user
told once when a result appears or its window ended."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.chat import Reply
from core.errors import ProviderMisconfigured, UserFacingError
from plugins.realname.outcome import updated
from plugins.realname.rules import Result
from plugins.realname.sessions import FINISHED, Session

if TYPE_CHECKING:
    from plugins.realname.flow import Verifier

log = logging.getLogger(__name__)


async def poll(verifier: Verifier) -> None:
    """One run of the job. A session the provider cannot answer for is skipped (and logged); the rest go on."""
    now, db = verifier.clock(), verifier.services.run_db
    purged = await db(verifier.sessions.purge, now - verifier.config["retention_days"] * 86400)
    if purged:
        log.info("realname: deleted %d sessions past retention", purged)
    sessions: list[Session] = await db(verifier.sessions.pending)
    if not sessions:
        return
    try:
        verifier.provider()
    except ProviderMisconfigured as err:
        log.warning("realname: cannot check %d pending sessions: %s", len(sessions), err.detail)
        return
    for session in sessions:
        try:
            state, result, won = await verifier.settle(session)
        except UserFacingError as err:
            log.warning("realname: checking %s failed: %s", session.id[:6], err.detail)
            continue
        if won:
            await notify(verifier, session, state, result)


async def notify(verifier: Verifier, session: Session, state: str, result: Result | None) -> None:
    """Tell the owner of ``session`` how it ended (call only when :meth:`Verifier.settle` said ``won``: once)."""
    if state in FINISHED:
        text = verifier.outcome(session.lang, updated(session, state, result), result)
    else:
        text = verifier.services.catalogue.text(session.lang, "realname.expired_notice")
    try:
        await verifier.services.send(session.chat_id, Reply(text))
    except Exception:
        log.exception("realname: could not notify user %s", session.user_id)
