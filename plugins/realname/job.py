"""The background job (``poll_seconds``): retention, then every pending session asked about once, its user
told once when a result appears or its window ended."""

from __future__ import annotations

import logging

from core.contract.chat import Reply
from core.contract.errors import ProviderMisconfigured, UserFacingError
from plugins.realname.outcome import updated
from plugins.realname.ports import Settles
from plugins.realname.rules import Result
from plugins.realname.sessions import FINISHED, Session

log = logging.getLogger(__name__)

#: Seconds after its decision a session still not marked notified is taken for a notice a restart cut off.
MISSED_AFTER = 60.0


async def poll(verifier: Settles) -> None:
    """One run of the job. A session the provider cannot answer for is skipped (and logged); the rest go on."""
    now, db = verifier.clock(), verifier.services.run_db
    if verifier.gate is not None:
        await verifier.gate.poll()
    purged = await db(verifier.sessions.purge, now - verifier.config["retention_days"] * 86400)
    if purged:
        log.info("realname: deleted %d sessions past retention", purged)
    await notify_missed(verifier)
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


async def notify_missed(verifier: Settles) -> None:
    """Notices a restart cut off between the decision and the notice (the outbox key keeps them single)."""
    for session in await verifier.services.run_db(verifier.sessions.unnotified, verifier.clock() - MISSED_AFTER):
        log.info("realname: user %s was not yet told how %s ended", session.user_id, session.id[:6])
        await notify(verifier, session, session.state, None)


async def notify(verifier: Settles, session: Session, state: str, result: Result | None) -> None:
    """Tell the owner of ``session`` how it ended (call only when :meth:`Settles.settle` said ``won``: once).

    Through the outbox: stored first, retried until Telegram accepts it, across restarts, once per session
    (its key). The notice holds only the masked identity Baidu returns; the outbox erases it on delivery.
    """
    if state in FINISHED:
        text = verifier.outcome(session.lang, updated(session, state, result), result)
    else:
        text = verifier.services.catalogue.text(session.lang, "realname.expired_notice")
    await verifier.services.outbox.put(session.chat_id, Reply(text), key=f"realname:{session.id}")
    await verifier.services.run_db(verifier.sessions.notified, session.id, verifier.clock())
