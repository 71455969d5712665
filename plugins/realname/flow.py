"""The verification flow of one bot: the commands, the identity question, the launch, the result, the job.

See docs/realname.md. Database calls go through ``services.run_db`` (the store's own thread, never behind a
provider call); provider calls through ``run_blocking``. Names and ID numbers are only ever in memory while
a reply is composed: never logged, never stored (the identity question keeps only flags).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.contract.chat import Button, Command, Context, Services
from core.contract.errors import ProviderMisconfigured, UserFacingError
from core.infra import keys
from plugins.realname import job, stats
from plugins.realname.gate import Gate
from plugins.realname.identity import IdentityProblem, parse_identity
from plugins.realname.note_providers import make_note_provider
from plugins.realname.notes import NOTE, NoteFlow
from plugins.realname.outcome import outcome, updated
from plugins.realname.providers import Identity, RealnameProvider, Result, is_web_url, make_provider
from plugins.realname.sessions import (
    EXPIRED,
    FAILED,
    FINISHED,
    PASSED,
    PENDING,
    REPLACED,
    RETURN_PATH,
    Session,
    SessionStore,
    looks_like_id,
    new_id,
)

log = logging.getLogger(__name__)

NAME = "realname"
COMMAND = "verify"
#: Deep-link payload that starts a verification in the private chat (from the group answer).
GO = "go"
#: Callback data prefix of the "Check result" button.
CHECK = "c:"
#: How long after its window a pending session the provider cannot be asked about is given up.
GIVE_UP_AFTER = 3600.0
#: The conversation step while the name and ID number are asked for (``ctx.data``: only ``fresh`` and ``tries``).
IDENTITY = "identity"
#: How many unusable answers before the question is given up.
IDENTITY_TRIES = 3
#: How long the per-user lock around a launch may be held: longer than its provider calls take (a result query,
#: then up to four requests for a launch, each at most 35 s × 3 tries with the default ``http`` settings).
LOCK_SECONDS = 600.0


class Verifier:
    """The plugin's behaviour for one running bot (owned by its :class:`plugins.realname.Plugin`)."""

    def __init__(self, config: dict[str, Any], services: Services, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.services = services
        self.clock = clock
        self.sessions = SessionStore(services.store)
        self._provider: RealnameProvider | None = None
        #: ``method: video_note``: the steps of a verification in the chat (plugins/realname/notes.py)
        self.notes = NoteFlow(self) if config.get("method") == "video_note" else None
        #: ``gate_chats``: the verified-only groups (plugins/realname/gate.py)
        self.gate = Gate(self) if config.get("gate_chats") else None

    def commands(self) -> list[Command]:
        """The plugin's commands, bound to this verifier."""
        return [
            Command(
                COMMAND,
                help="realname.help.verify",
                handler=self.verify,
                on_callback=self.on_button,
                on_deep_link=self.on_link,
                ends_conversation=self.notes is None,  # a running note step is not ended by /verify (it says so)
                on_join_request=self.gate.on_join_request if self.gate is not None else None,
            ),
            Command("forget", help="realname.help.forget", handler=self.forget),
            Command("verifystat", help="realname.help.verifystat", handler=self.verifystat, admin_only=True),
        ]

    # -- plumbing --------------------------------------------------------------------------------------
    def provider(self) -> RealnameProvider:
        """The configured provider; ``ProviderMisconfigured`` when its credentials are missing."""
        if self._provider is None:
            video = self.config.get("method") == "video_note"  # checked in the chat: plugins/realname/notes.py
            make = make_note_provider if video else make_provider
            self._provider = make(self.config, self.services)
            if self._provider is None:
                raise ProviderMisconfigured(f"realname: providers.{self.config['provider']} has no credentials")
        return self._provider

    def close(self) -> None:
        """Let go of the provider (its client is the bot's, closed with the services)."""
        self._provider = None

    def describe(self) -> str:
        """One line for ``/plugins``."""
        try:
            return f"{self.provider().describe()}; polling every {self.config['poll_seconds']:g} s"
        except ProviderMisconfigured:
            return f"{self.config['provider']} — NOT CONFIGURED (providers.{self.config['provider']} has no keys)"

    def _return_url(self, session_id: str, return_ref: str | None) -> str:
        """``return_url`` when set, else the bot's return page (with ``server.public_url``), else its deep link."""
        template = self.config["return_url"]
        if template:
            return template.replace("{session}", session_id)
        web = getattr(self.services, "web", None)
        if return_ref and web is not None and web.public_url:
            return str(web.url(RETURN_PATH.replace("{ref}", return_ref)))
        return self.services.deep_link(COMMAND, session_id)

    def outcome(self, lang: str, session: Session, result: Result | None) -> str:
        """The outcome message of ``session`` in ``lang`` (see :func:`plugins.realname.outcome.outcome`)."""
        return outcome(self.services.catalogue, lang, self.config, session, result)

    # -- commands --------------------------------------------------------------------------------------
    async def verify(self, ctx: Context) -> None:
        """``/verify`` (start or continue), ``/verify new`` (start over), ``/verify status``; and the answer to
        the identity question (a text message, see :meth:`identity_answer`)."""
        if ctx.step == IDENTITY:
            await self.identity_answer(ctx)
            return
        if ctx.step == NOTE and self.notes is not None:
            await self.notes.on_note(ctx)
            return
        sub = ctx.args[0].lower() if ctx.args else ""
        if sub not in ("", "new", "status"):
            await ctx.reply(ctx.t("realname.usage"))
            return
        if not ctx.chat.is_private:
            button = Button(ctx.t("realname.group_button"), url=ctx.deep_link(GO))
            await ctx.reply(ctx.t("realname.group"), buttons=[[button]])
            return
        if sub == "status":
            session = await ctx.run_db(self.sessions.latest, ctx.user.id)
            if session is None:
                await ctx.reply(ctx.t("realname.none"))
            else:
                await self._show(ctx, session, closed_key="realname.last_closed")
            return
        await self._begin(ctx, fresh=sub == "new")

    async def on_link(self, ctx: Context, payload: str) -> None:
        """``/start verify-<payload>``: the user is back from the H5 page (or came from a group)."""
        if payload == GO:
            if ctx.chat.is_private:
                await self._begin(ctx, fresh=False)
            else:
                await ctx.reply(ctx.t("realname.invalid_link"))
            return
        await self._show_owned(ctx, payload)

    async def on_button(self, ctx: Context, data: str) -> None:
        """The "Check result" button."""
        if not data.startswith(CHECK):
            await ctx.reply(ctx.t("router.button_expired"))
            return
        await self._show_owned(ctx, data[len(CHECK) :])

    async def forget(self, ctx: Context) -> None:
        """``/forget``: delete every session of this user."""
        count = await ctx.run_db(self.sessions.forget, ctx.user.id)
        if self.gate is not None:  # and their join requests
            await ctx.run_db(self.gate.store.forget, ctx.user.id)
        log.info("realname: user %s deleted %d verification sessions", ctx.user.id, count)
        text_key = "realname.forgot" if ctx.chat.is_private else "realname.forgot_group"
        await ctx.reply(ctx.t(text_key, count=count))

    async def verifystat(self, ctx: Context) -> None:
        """``/verifystat [session id]`` (admins): see :func:`plugins.realname.stats.verifystat`."""
        await stats.verifystat(ctx, self.sessions, self.provider)

    # -- the identity question -------------------------------------------------------------------------
    async def identity_answer(self, ctx: Context) -> None:
        """The user's answer to the identity question: deleted from the chat at once (where the bot may),
        checked (GB 11643 ID number, a name) before any provider call, then the launch. Never stored or logged;
        an unusable answer is asked again, at most :data:`IDENTITY_TRIES` times."""
        deleted = await ctx.delete_message()
        if not deleted:
            log.info("realname: could not delete the identity message of user %s", ctx.user.id)
        try:
            identity = parse_identity(ctx.text)
        except IdentityProblem as problem:
            tries = int(ctx.data.get("tries", 0)) + 1
            log.info("realname: unusable identity answer from user %s (%s)", ctx.user.id, problem.key)
            lines = [ctx.t(problem.key)]
            if not deleted:
                lines.append(ctx.t("realname.identity.not_deleted"))
            if tries >= IDENTITY_TRIES:
                lines.append(ctx.t("realname.identity.gave_up"))
            else:
                ctx.data["tries"] = tries
                await ctx.expect_text(IDENTITY)
                lines.append(ctx.t("realname.identity.again"))
            await ctx.reply("\n".join(lines))
            return
        if not deleted:
            await ctx.reply(ctx.t("realname.identity.not_deleted"))
        await self._begin(ctx, fresh=bool(ctx.data.get("fresh")), identity=identity)

    async def _ask_identity(self, ctx: Context, *, fresh: bool) -> None:
        ctx.data.update(fresh=fresh, tries=0)
        await ctx.expect_text(IDENTITY)
        await ctx.reply(ctx.t("realname.identity.ask"))

    # -- the launch ------------------------------------------------------------------------------------
    async def _begin(self, ctx: Context, *, fresh: bool, identity: Identity | None = None) -> None:
        """Start a verification, or re-send the pending one (see docs/realname.md, "A second /verify").

        One at a time per user, across every process sharing the state, so a double tap cannot leave two
        pending sessions. A provider that needs the identity first gets it asked for (and this runs again
        with the answer). With ``method: video_note`` the note steps take over (plugins/realname/notes.py).
        """
        if self.notes is not None:
            if identity is not None:
                await self.notes.identified(ctx, identity)
            else:
                await self.notes.start(ctx, fresh=fresh)
            return
        async with self.services.state.lock(keys.plugin(NAME, "begin", ctx.user.id), ttl=LOCK_SECONDS):
            await self._begin_locked(ctx, fresh=fresh, identity=identity)

    async def _begin_locked(self, ctx: Context, *, fresh: bool, identity: Identity | None) -> None:
        session_id, return_ref = new_id(), new_id()
        return_url = self._return_url(session_id, return_ref)
        if not is_web_url(return_url):  # e.g. the console: its deep links are "/start …" lines, not web pages
            log.info("realname: /verify from user %s on a transport the H5 page cannot return to", ctx.user.id)
            await ctx.reply(ctx.t("realname.needs_telegram"))
            return
        provider = self.provider()
        replace: Session | None = None
        pending: Session | None = await ctx.run_db(self.sessions.pending_of, ctx.user.id)
        if pending is not None:
            state, result, _ = await self.settle(pending, answered=True)
            if state in FINISHED:  # it ended meanwhile: that is the answer
                await ctx.reply(self.outcome(ctx.lang, updated(pending, state, result), result))
                return
            if state == PENDING:
                left = pending.expires_at - self.clock()
                if not fresh and left >= self.config["reuse_minutes"] * 60:
                    back = self._return_url(pending.id, pending.return_ref)
                    url = await ctx.run_blocking(provider.link, pending.reference, back)
                    if url:
                        text = ctx.t("realname.reused", minutes=max(1, int(left // 60)))
                        await ctx.reply(text, buttons=self._buttons(ctx, pending.id, url))
                        return
                replace = pending
        if provider.needs_identity and identity is None:
            await self._ask_identity(ctx, fresh=fresh)
            return
        async with ctx.progress():
            launch = await ctx.run_blocking(provider.start, return_url, identity)
        del identity  # the name and ID number are not needed any more
        now = self.clock()
        session = Session(
            id=session_id,
            user_id=ctx.user.id,
            chat_id=ctx.chat.id,
            lang=ctx.lang,
            provider=provider.name,
            reference=launch.reference,
            state=PENDING,
            score=None,
            liveness=None,
            spoofing=None,
            created_at=now,
            expires_at=now + launch.expires_in,
            return_ref=return_ref,
        )
        await ctx.run_db(self.sessions.create, session)
        log.info("realname: user %s started verification %s", ctx.user.id, session_id[:6])
        if replace is not None:  # only now: had the launch failed, the pending session would still be theirs
            await ctx.run_db(self.sessions.close, replace.id, REPLACED, self.clock())
            log.info("realname: user %s replaced verification %s", ctx.user.id, replace.id[:6])
        text = ctx.t(provider.started_key, minutes=int(launch.expires_in // 60))
        await ctx.reply(text, buttons=self._buttons(ctx, session_id, launch.url))

    def _buttons(self, ctx: Context, session_id: str, url: str) -> list[list[Button]]:
        return [
            [Button(ctx.t("realname.open_button"), url=url)],
            [ctx.button(ctx.t("realname.check_button"), CHECK + session_id)],
        ]

    # -- the result ------------------------------------------------------------------------------------
    async def _show_owned(self, ctx: Context, session_id: str) -> None:
        """Where the session stands, if this user owns it and asks in a private chat; else one neutral answer
        that reveals nothing (checked before the database is asked, and the provider never is)."""
        session: Session | None = None
        if not ctx.chat.is_private or not looks_like_id(session_id):
            log.info("realname: malformed or non-private verification link from user %s", ctx.user.id)
        else:
            session = await ctx.run_db(self.sessions.get, session_id)
            if session is None or session.user_id != ctx.user.id:
                log.info("realname: unknown or foreign verification link from user %s", ctx.user.id)
                session = None
        if session is None:
            await ctx.reply(ctx.t("realname.invalid_link"))
            return
        await self._show(ctx, session, closed_key="realname.invalid_link")

    async def _show(self, ctx: Context, session: Session, *, closed_key: str) -> None:
        """Tell the owner where ``session`` stands (asking the provider when it is still open)."""
        if session.state in (PENDING, REPLACED):
            state, result, _ = await self.settle(session, answered=True)
            if state in FINISHED:
                await ctx.reply(self.outcome(ctx.lang, updated(session, state, result), result))
            elif state == PENDING:
                button = ctx.button(ctx.t("realname.check_button"), CHECK + session.id)
                await ctx.reply(ctx.t("realname.still_pending"), buttons=[[button]])
            else:
                await ctx.reply(ctx.t(closed_key))
            return
        if session.state in FINISHED:
            result = None
            provider = self.provider()
            try:  # only for the masked identity: the outcome stored when it was decided stands
                if provider.identity_in_result:
                    result = await ctx.run_blocking(provider.result, session.reference)
            except UserFacingError as err:
                log.info("realname: identity of %s unavailable: %s", session.id[:6], err.detail)
            await ctx.reply(self.outcome(ctx.lang, session, result))
            return
        await ctx.reply(ctx.t(closed_key))

    async def settle(
        self, session: Session, callback_code: str | None = None, *, answered: bool = False
    ) -> tuple[str, Result | None, bool]:
        """Ask the provider about an open session and record what it says (``callback_code``: see
        :meth:`RealnameProvider.result`; ``answered``: the caller tells the user in the chat itself).

        Returns ``(state, result, won)``: ``won`` is true when this call moved the session out of pending
        (so the caller, and only it, notifies the user: in the chat when ``answered``, else ``job.notify``).
        """
        provider, db = self.provider(), self.services.run_db
        try:
            result = await self.services.run_blocking(provider.result, session.reference, callback_code)
        except UserFacingError:
            now = self.clock()
            if session.state == PENDING and now >= session.expires_at + GIVE_UP_AFTER:
                return EXPIRED, None, await db(self.sessions.close, session.id, EXPIRED, now, answered)
            raise
        now = self.clock()
        if result is not None:
            state = PASSED if result.passed else FAILED
            scores = (result.score, result.liveness, result.spoofing)
            if await db(self.sessions.finish, session.id, state, *scores, now, answered):
                log.info("realname: verification %s of user %s %s", session.id[:6], session.user_id, state)
                if self.gate is not None:
                    await self.gate.after_verdict(session.user_id, state == PASSED)
                return state, result, True
            current: Session | None = await db(self.sessions.get, session.id)
            if current is not None and current.state in FINISHED:
                return current.state, result, False
            return (current.state if current else EXPIRED), None, False
        if session.state == PENDING and now >= session.expires_at:
            won = await db(self.sessions.close, session.id, EXPIRED, now, answered)
            if won:
                log.info("realname: verification %s of user %s expired", session.id[:6], session.user_id)
            return EXPIRED, None, won
        await db(self.sessions.checked, session.id, now)
        return session.state, None, False

    # -- the background job ----------------------------------------------------------------------------
    async def poll(self) -> None:
        """One run of the job: see :func:`plugins.realname.job.poll`."""
        await job.poll(self)
