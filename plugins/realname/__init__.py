"""Real-name verification: ``/verify`` sends the user to the provider's H5 page (Baidu "faceprint": ID card
and a live face check against the authoritative source) and reports the outcome when they come back.

Flow (see docs/realname.md):

1. ``/verify`` (private chats only; in a group the bot answers with a button into a private chat): a new
   verification at the provider, a session row in SQLite (:mod:`plugins.realname.sessions`), and a reply
   with a button that opens the H5 page and a "Check result" button. The page's success and failure URLs
   are both the bot's deep link ``https://t.me/<bot>?start=verify-<session id>``.
2. The user comes back (``/start verify-<id>``), presses "Check result", or sends ``/verify status``:
   the session's *owner* gets the outcome, decided only by the provider's result query (never by which
   URL the browser came back through): passed/failed, the scores and the confirmed name and ID number
   masked (``张*``, ``110***********002X``). A link that is unknown, expired, replaced or someone
   else's gets one neutral answer that reveals nothing.
3. A background job (``poll_seconds``) asks about every pending session, tells its user once when a
   result appears, marks sessions whose window ended ``expired`` (after a last check), and deletes
   finished sessions older than ``retention_days``.
4. ``/forget`` deletes the user's sessions; ``/verifystat <id>`` (admins) shows the provider's statistics.

With ``provider: webank`` (docs/webank.md) step 1 first asks, in the private chat, for the name and the ID
number (``ctx.expect_text()``): the answer is deleted from the chat at once, checked (GB 11643) before any
call, sent to WeBank's ``getAdvFaceId`` and dropped; the launch URL works once, so a second ``/verify`` asks
again and replaces the pending session. The reply shows only passed/failed, similarity and liveness.

Names and ID numbers are only ever in memory while a reply is composed: never logged, never stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.chat import Button, Command, Context, Reply, Services
from core.config import ConfigError, Field, check_secure_url
from core.errors import ProviderMisconfigured, UserFacingError
from core.hookspecs import hookimpl
from core.i18n import load_dir
from plugins.realname.identity import IdentityProblem, parse_identity
from plugins.realname.providers import Identity, RealnameProvider, Result, is_web_url, make_provider
from plugins.realname.sessions import (
    EXPIRED,
    FAILED,
    FINISHED,
    PASSED,
    PENDING,
    REPLACED,
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
#: ``ctx.pending`` key while the name and ID number are asked for (holds only flags, never the answer).
ASKING = "asking_identity"
#: How many unusable answers before the question is given up.
IDENTITY_TRIES = 3
#: Keys never shown from the provider's statistics (defence in depth: they hold counts only).
PERSONAL_KEYS = ("name", "idcard", "id_card", "id_no", "number", "image", "base64", "photo", "video", "url")


# ---------------------------------------------------------------------------------------------- hooks
@hookimpl
def aipbot_config_schema() -> dict[str, Field]:
    """``plugins.realname``: provider, plan, URLs, pass rule, polling, window, reuse and retention."""
    return {
        "provider": Field(str, default="baidu", choices=["baidu", "webank"], help="verification provider"),
        "plan_id": Field(
            str, default="", help="Baidu: the H5 plan id from the real-name verification console (required for baidu)"
        ),
        "h5_base_url": Field(str, default="", help="the H5 page; empty: providers.baidu.h5_base_url"),
        "return_url": Field(
            str,
            default="",
            help="where the H5 page sends the user back ({session} = session id); empty: the bot's deep link."
            " WeBank appends its callback parameters to it",
        ),
        "poll_seconds": Field(float, default=60, min=0.01, max=3600, help="how often pending sessions are checked"),
        "window_minutes": Field(
            float, default=120, min=1, max=120, help="how long a verification can be completed (Baidu: 2 hours)"
        ),
        "reuse_minutes": Field(
            float,
            default=15,
            min=0,
            max=120,
            help="a second /verify re-sends a pending link with at least this much time left, else replaces it",
        ),
        "min_score": Field(float, default=80, min=0, max=100, help="passed: face similarity at least this (0–100)"),
        "min_liveness": Field(float, default=0.3, min=0, max=1, help="passed: liveness score at least this (0–1)"),
        "max_spoofing": Field(
            float, default=0.00048, min=0, max=1, help="passed: spoofing score at most this (0–1; Baidu: 0.00048)"
        ),
        "retention_days": Field(
            float, default=30, min=0, help="finished and expired sessions are deleted after this many days"
        ),
    }


@hookimpl
def aipbot_messages() -> dict[str, dict[str, str]]:
    """The plugin's catalogue (``locale/en.yaml``, ``locale/zh.yaml``)."""
    return load_dir(Path(__file__).parent / "locale")


_verifiers: weakref.WeakKeyDictionary[Any, Verifier] = weakref.WeakKeyDictionary()


@hookimpl
def aipbot_commands(config: dict[str, Any], services: Services) -> list[Command]:
    """``/verify``, ``/forget`` and the admins' ``/verifystat``; creates the sessions table."""
    if config["provider"] == "baidu" and not config["plan_id"]:
        raise ConfigError("plugins.realname.plan_id", "is required")
    for key in ("h5_base_url", "return_url"):
        if config[key]:
            check_secure_url(config[key], f"plugins.realname.{key}")
    verifier = Verifier(config, services)
    _verifiers[services] = verifier
    return verifier.commands()


@hookimpl
def aipbot_status(config: dict[str, Any], services: Services) -> str:
    """The provider, its plan and the pass rule, or that the provider is not configured."""
    verifier = _verifiers.get(services)
    return verifier.describe() if verifier is not None else ""


@hookimpl
def aipbot_startup(services: Services) -> None:
    """Schedule the polling job (it also expires abandoned sessions and applies the retention)."""
    verifier = _verifiers.get(services)
    if verifier is not None:
        services.every(verifier.config["poll_seconds"], verifier.poll, name="realname-poll")


# ---------------------------------------------------------------------------------------------- URLs
# ---------------------------------------------------------------------------------------------- masking
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


# ---------------------------------------------------------------------------------------------- the plugin
class Verifier:
    """The plugin's behaviour for one running bot (one per ``Services``)."""

    def __init__(self, config: dict[str, Any], services: Services, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.services = services
        self.clock = clock
        self.sessions = SessionStore(services.store)
        self._provider: RealnameProvider | None = None
        self._user_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def commands(self) -> list[Command]:
        """The plugin's commands, bound to this verifier."""
        return [
            Command(
                COMMAND,
                help="realname.help.verify",
                handler=self.verify,
                on_callback=self.on_button,
                on_deep_link=self.on_link,
            ),
            Command("forget", help="realname.help.forget", handler=self.forget),
            Command("verifystat", help="realname.help.verifystat", handler=self.verifystat, admin_only=True),
        ]

    # -- plumbing --------------------------------------------------------------------------------------
    def provider(self) -> RealnameProvider:
        """The configured provider; ``ProviderMisconfigured`` when its credentials are missing."""
        if self._provider is None:
            self._provider = make_provider(self.config, self.services)
            if self._provider is None:
                raise ProviderMisconfigured(f"realname: providers.{self.config['provider']} has no credentials")
        return self._provider

    def describe(self) -> str:
        """One line for ``/plugins``."""
        try:
            return f"{self.provider().describe()}; polling every {self.config['poll_seconds']:g} s"
        except ProviderMisconfigured:
            return f"{self.config['provider']} — NOT CONFIGURED (providers.{self.config['provider']} has no keys)"

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.services.run_blocking(fn, *args)

    def _return_url(self, session_id: str) -> str:
        template = self.config["return_url"]
        if template:
            return template.replace("{session}", session_id)
        return self.services.deep_link(COMMAND, session_id)

    def _t(self, lang: str, key: str, **params: Any) -> str:
        return self.services.catalogue.text(lang, key, **params)

    # -- commands --------------------------------------------------------------------------------------
    async def verify(self, ctx: Context) -> None:
        """``/verify`` (start or continue), ``/verify new`` (start over), ``/verify status``; and the answer to
        the identity question (a text message, see :meth:`identity_answer`)."""
        if ASKING in ctx.pending:
            await self.identity_answer(ctx)
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
            session = await self._db(self.sessions.latest, ctx.user.id)
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
        session = await self._owned(ctx, payload)
        if session is None:
            await ctx.reply(ctx.t("realname.invalid_link"))
            return
        await self._show(ctx, session, closed_key="realname.invalid_link")

    async def on_button(self, ctx: Context, data: str) -> None:
        """The "Check result" button."""
        if not data.startswith(CHECK):
            await ctx.reply(ctx.t("router.button_expired"))
            return
        session = await self._owned(ctx, data[len(CHECK) :])
        if session is None:
            await ctx.reply(ctx.t("realname.invalid_link"))
            return
        await self._show(ctx, session, closed_key="realname.invalid_link")

    async def forget(self, ctx: Context) -> None:
        """``/forget``: delete every session of this user."""
        count = await self._db(self.sessions.forget, ctx.user.id)
        log.info("realname: user %s deleted %d verification sessions", ctx.user.id, count)
        key = "realname.forgot" if ctx.chat.is_private else "realname.forgot_group"
        await ctx.reply(ctx.t(key, count=count))

    async def verifystat(self, ctx: Context) -> None:
        """``/verifystat [session id]`` (admins, private chat): the provider's statistics, or recent sessions."""
        if not ctx.chat.is_private:
            await ctx.reply(ctx.t("realname.stat_private"))
            return
        if not ctx.args:
            sessions = await self._db(self.sessions.recent, 10)
            lines = [ctx.t("realname.stat_usage")]
            lines += [f"{s.id} · {s.state} · user {s.user_id} · {_utc(s.created_at)}" for s in sessions]
            if not sessions:
                lines.append(ctx.t("realname.stat_none"))
            await ctx.reply("\n".join(lines))
            return
        session_id = ctx.args[0]
        session = await self._db(self.sessions.get, session_id) if looks_like_id(session_id) else None
        if session is None:
            await ctx.reply(ctx.t("realname.stat_unknown"))
            return
        provider = self.provider()
        stats = await ctx.run_blocking(provider.stats, session.reference)
        lines = [
            ctx.t(
                "realname.stat_title",
                session=session.id,
                state=session.state,
                user_id=session.user_id,
                created=_utc(session.created_at),
            )
        ]
        lines += _flatten(stats) or [ctx.t("realname.stat_empty")]
        await ctx.reply("\n".join(lines))

    # -- the flow --------------------------------------------------------------------------------------
    async def _owned(self, ctx: Context, session_id: str) -> Session | None:
        """The session if this user owns it and asks in a private chat; else None (and nothing revealed)."""
        if not ctx.chat.is_private or not looks_like_id(session_id):
            log.info("realname: malformed or non-private verification link from user %s", ctx.user.id)
            return None
        session: Session | None = await self._db(self.sessions.get, session_id)
        if session is None or session.user_id != ctx.user.id:
            log.info("realname: unknown or foreign verification link from user %s", ctx.user.id)
            return None
        return session

    async def identity_answer(self, ctx: Context) -> None:
        """The user's answer to the identity question: deleted from the chat at once (where the bot may),
        checked (GB 11643 ID number, a name) before any provider call, then the launch. Never stored or logged;
        an unusable answer is asked again, at most :data:`IDENTITY_TRIES` times."""
        asked = ctx.pending.pop(ASKING)
        deleted = await ctx.delete_message()
        if not deleted:
            log.info("realname: could not delete the identity message of user %s", ctx.user.id)
        try:
            identity = parse_identity(ctx.text)
        except IdentityProblem as problem:
            tries = int(asked.get("tries", 0)) + 1
            log.info("realname: unusable identity answer from user %s (%s)", ctx.user.id, problem.key)
            lines = [ctx.t(problem.key)]
            if not deleted:
                lines.append(ctx.t("realname.identity.not_deleted"))
            if tries >= IDENTITY_TRIES:
                lines.append(ctx.t("realname.identity.gave_up"))
            else:
                ctx.pending[ASKING] = {**asked, "tries": tries}
                ctx.expect_text()
                lines.append(ctx.t("realname.identity.again"))
            await ctx.reply("\n".join(lines))
            return
        if not deleted:
            await ctx.reply(ctx.t("realname.identity.not_deleted"))
        await self._begin(ctx, fresh=bool(asked.get("fresh")), identity=identity)

    async def _ask_identity(self, ctx: Context, *, fresh: bool) -> None:
        ctx.pending.clear()
        ctx.pending[ASKING] = {"fresh": fresh, "tries": 0}
        ctx.expect_text()
        await ctx.reply(ctx.t("realname.identity.ask"))

    async def _begin(self, ctx: Context, *, fresh: bool, identity: Identity | None = None) -> None:
        """Start a verification, or re-send the pending one (see docs/realname.md, "A second /verify").

        One at a time per user, so a double tap cannot leave two pending sessions. A provider that needs the
        identity first gets it asked for (and this runs again with the answer).
        """
        lock = self._user_locks.get(ctx.user.id)
        if lock is None:
            lock = self._user_locks[ctx.user.id] = asyncio.Lock()
        async with lock:
            await self._begin_locked(ctx, fresh=fresh, identity=identity)

    async def _begin_locked(self, ctx: Context, *, fresh: bool, identity: Identity | None) -> None:
        session_id = new_id()
        return_url = self._return_url(session_id)
        if not is_web_url(return_url):  # e.g. the console: its deep links are "/start …" lines, not web pages
            log.info("realname: /verify from user %s on a transport the H5 page cannot return to", ctx.user.id)
            await ctx.reply(ctx.t("realname.needs_telegram"))
            return
        provider = self.provider()
        replace: Session | None = None
        pending: Session | None = await self._db(self.sessions.pending_of, ctx.user.id)
        if pending is not None:
            state, result, _ = await self._settle(pending)
            if state in FINISHED:  # it ended meanwhile: that is the answer
                await ctx.reply(self._outcome(ctx.lang, self._updated(pending, state, result), result))
                return
            if state == PENDING:
                left = pending.expires_at - self.clock()
                if not fresh and left >= self.config["reuse_minutes"] * 60:
                    url = await ctx.run_blocking(provider.link, pending.reference, self._return_url(pending.id))
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
        )
        await self._db(self.sessions.create, session)
        log.info("realname: user %s started verification %s", ctx.user.id, session_id[:6])
        if replace is not None:  # only now: had the launch failed, the pending session would still be theirs
            await self._db(self.sessions.close, replace.id, REPLACED, self.clock())
            log.info("realname: user %s replaced verification %s", ctx.user.id, replace.id[:6])
        text = ctx.t(provider.started_key, minutes=int(launch.expires_in // 60))
        await ctx.reply(text, buttons=self._buttons(ctx, session_id, launch.url))

    def _buttons(self, ctx: Context, session_id: str, url: str) -> list[list[Button]]:
        return [
            [Button(ctx.t("realname.open_button"), url=url)],
            [ctx.button(ctx.t("realname.check_button"), CHECK + session_id)],
        ]

    async def _show(self, ctx: Context, session: Session, *, closed_key: str) -> None:
        """Tell the owner where ``session`` stands (asking the provider when it is still open)."""
        if session.state in (PENDING, REPLACED):
            state, result, _ = await self._settle(session)
            if state in FINISHED:
                await ctx.reply(self._outcome(ctx.lang, self._updated(session, state, result), result))
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
            await ctx.reply(self._outcome(ctx.lang, session, result))
            return
        await ctx.reply(ctx.t(closed_key))

    async def _settle(self, session: Session) -> tuple[str, Result | None, bool]:
        """Ask the provider about an open session and record what it says.

        Returns ``(state, result, won)``: ``won`` is true when this call moved the session out of pending
        (so the caller, and only it, may notify the user).
        """
        provider = self.provider()
        try:
            result = await self.services.run_blocking(provider.result, session.reference)
        except UserFacingError:
            now = self.clock()
            if session.state == PENDING and now >= session.expires_at + GIVE_UP_AFTER:
                won = await self._db(self.sessions.close, session.id, EXPIRED, now)
                return EXPIRED, None, won
            raise
        now = self.clock()
        if result is not None:
            state = PASSED if result.passed else FAILED
            args = (session.id, state, result.score, result.liveness, result.spoofing, now)
            if await self._db(self.sessions.finish, *args):
                log.info("realname: verification %s of user %s %s", session.id[:6], session.user_id, state)
                return state, result, True
            current: Session | None = await self._db(self.sessions.get, session.id)
            if current is not None and current.state in FINISHED:
                return current.state, result, False
            return (current.state if current else EXPIRED), None, False
        if session.state == PENDING and now >= session.expires_at:
            won = await self._db(self.sessions.close, session.id, EXPIRED, now)
            if won:
                log.info("realname: verification %s of user %s expired", session.id[:6], session.user_id)
            return EXPIRED, None, won
        await self._db(self.sessions.checked, session.id, now)
        return session.state, None, False

    @staticmethod
    def _updated(session: Session, state: str, result: Result | None) -> Session:
        if result is None:
            return session
        return dataclasses.replace(
            session, state=state, score=result.score, liveness=result.liveness, spoofing=result.spoofing
        )

    def _outcome(self, lang: str, session: Session, result: Result | None) -> str:
        """The outcome message: verdict, masked identity, scores against the rule, the reference."""
        passed = session.state == PASSED
        lines = [self._t(lang, "realname.passed" if passed else "realname.failed")]
        if session.provider == "webank":  # WeBank's verdict; similarity and liveness (0–100), nothing else
            lines.append(self._t(lang, "realname.webank.similarity", score=_num(session.score)))
            lines.append(self._t(lang, "realname.webank.liveness", liveness=_num(session.liveness)))
            return "\n".join(lines)
        if result is not None and (result.name or result.id_number):
            if result.name:
                lines.append(self._t(lang, "realname.name", name=mask_name(result.name)))
            if result.id_number:
                lines.append(self._t(lang, "realname.id_number", id_number=mask_id_number(result.id_number)))
        else:
            lines.append(self._t(lang, "realname.identity_gone"))
        cfg = self.config
        lines.append(self._t(lang, "realname.score", score=_num(session.score), needed=_num(cfg["min_score"])))
        lines.append(
            self._t(lang, "realname.liveness", liveness=_num(session.liveness), needed=_num(cfg["min_liveness"]))
        )
        lines.append(
            self._t(lang, "realname.spoofing", spoofing=_num(session.spoofing), allowed=_num(cfg["max_spoofing"]))
        )
        if result is not None and result.failed_checks and not passed:
            checks = ", ".join(self._t(lang, f"realname.check.{c}") for c in result.failed_checks)
            lines.append(self._t(lang, "realname.failed_checks", checks=checks))
        lines.append(self._t(lang, "realname.reference", session=session.id))
        return "\n".join(lines)

    # -- the background job ----------------------------------------------------------------------------
    async def poll(self) -> None:
        """One run of the job: retention, then every pending session asked about once."""
        now = self.clock()
        purged = await self._db(self.sessions.purge, now - self.config["retention_days"] * 86400)
        if purged:
            log.info("realname: deleted %d sessions past retention", purged)
        sessions: list[Session] = await self._db(self.sessions.pending)
        if not sessions:
            return
        try:
            self.provider()
        except ProviderMisconfigured as err:
            log.warning("realname: cannot check %d pending sessions: %s", len(sessions), err.detail)
            return
        for session in sessions:
            try:
                state, result, won = await self._settle(session)
            except UserFacingError as err:
                log.warning("realname: checking %s failed: %s", session.id[:6], err.detail)
                continue
            if not won:
                continue
            if state in FINISHED:
                text = self._outcome(session.lang, self._updated(session, state, result), result)
            else:
                text = self._t(session.lang, "realname.expired_notice")
            try:
                await self.services.send(session.chat_id, Reply(text))
            except Exception:
                log.exception("realname: could not notify user %s", session.user_id)


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _flatten(value: Any, prefix: str = "") -> list[str]:
    """``key: value`` lines of a nested answer, without anything that could identify a person."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if any(word in str(key).lower() for word in PERSONAL_KEYS):
                continue
            lines += _flatten(item, f"{prefix}{key}" if not prefix else f"{prefix} › {key}")
    elif isinstance(value, list):
        for i, item in enumerate(value[:50]):
            lines += _flatten(item, f"{prefix}[{i}]")
    elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 64):
        lines.append(f"{prefix}: {value}" if prefix else str(value))
    return lines[:100]
