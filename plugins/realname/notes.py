"""Verification inside the chat (``plugins.realname.method: video_note``): the name and ID number, a code from the
provider, a round video note of the user reading it aloud, the provider's verdict. See docs/realname.md,
"Video note".

The flow (:class:`NoteFlow`, driven by :class:`plugins.realname.flow.Verifier`):

1. ``/verify`` → the identity question (the WeBank path's code: the message is deleted, checked locally, never
   stored or logged); refused at once, before anything is asked, during a cool-down or while a code is out;
2. a code from the provider (Tencent ``GetLiveCode``, Baidu ``faceliveness/sessioncode``) and a one-line how-to;
   the step waits for the note (``ctx.expect_video``). What the step keeps in the state store: the code, Baidu's
   session id, when the code was issued, the attempt id, the note's ``file_id`` once it came, and the name and ID
   number **sealed** (AES-256-GCM under a key derived from the bot token, which is never stored): so the note
   can come to any process of a cluster, or after a restart, and nothing readable is in the database or Redis;
3. the note: refused before any provider call when it is not a note (a video, an animation, a photo, a text),
   forwarded, recorded before the code was issued (its send time minus its duration), sent after the code
   expired (a new code is issued instead), too long, too short or too large for the provider;
4. the check (:meth:`NoteProvider.check`, in the I/O pool), the bytes in memory only and dropped at once;
   a failure the user can fix (the code not heard, no face, several faces, poor light, the file) gets a new
   code and another try, up to ``max_failures`` — then a cool-down of ``cooldown_minutes``; a verdict (passed,
   not live, not the person of the ID record, no such record) goes through the **outbox** under the attempt's
   key, so it arrives exactly once, also when a kill -9 made the journal replay the note;
5. the provider down: the user is told to try later and the admins are alerted (at most once an hour).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.contract.chat import Context, Reply
from core.contract.errors import BadImage, RateLimited, TemporarilyUnavailable, UserFacingError
from core.infra import keys
from core.infra.sealing import Sealer
from plugins.realname.note_providers import RETRY_REASONS, Code, NoteProvider, NoteResult
from plugins.realname.outcome import mask_id_number, mask_name
from plugins.realname.providers import Identity
from plugins.realname.sessions import FAILED, PASSED, Session, new_id

if TYPE_CHECKING:
    from plugins.realname.flow import Verifier

log = logging.getLogger(__name__)

#: The conversation step waiting for the video note.
NOTE = "note"
#: A note may have been sent this many seconds "before" the code (clock differences between Telegram and us).
CLOCK_SLACK = 5.0
#: Shorter than this, no code can be read in it.
MIN_NOTE_SECONDS = 1.0
#: How long the admins' "provider down" alert is not repeated.
ALERT_EVERY = 3600.0


#: The purpose the name and ID number's key is derived for (core.infra.sealing).
SEALING = b"aipbot realname identity v1"


def seal_identity(sealer: Sealer, identity: Identity, context: str) -> str:
    """The name and ID number sealed for ``context`` (the user's chat): nothing readable goes into the step."""
    return sealer.seal(json.dumps([identity.name, identity.id_number], ensure_ascii=False), context)


def open_identity(sealer: Sealer, sealed: str, context: str) -> Identity | None:
    """The identity, or None when ``sealed`` was not made for ``context`` under this key (a restart without a
    token)."""
    text = sealer.open(sealed, context)
    try:
        name, number = json.loads(text) if text is not None else (None, None)
    except (ValueError, TypeError):
        return None
    return Identity(name=str(name), id_number=str(number)) if name is not None else None


class NoteFlow:
    """The video-note steps of one bot's :class:`~plugins.realname.flow.Verifier`."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.config = verifier.config
        self.services = verifier.services
        self.clock: Callable[[], float] = verifier.clock
        token = str((self.services.config.get("telegram") or {}).get("token") or "")
        self.sealer = Sealer.for_token(token, SEALING)

    def provider(self) -> NoteProvider:
        """The configured note provider (``ProviderMisconfigured`` without keys)."""
        provider = self.verifier.provider()
        assert isinstance(provider, NoteProvider)
        return provider

    # -- the start ---------------------------------------------------------------------------------------
    async def start(self, ctx: Context, *, fresh: bool) -> None:
        """``/verify``: refuse while a code is out or during a cool-down, else ask for the name and ID number."""
        self.provider()  # not configured: the user is told before anything is asked
        conversations = self.services.conversations
        waiting = await conversations.get(ctx.chat.id, ctx.user.id)
        if waiting is not None and waiting.command == ctx.command.name and waiting.step == NOTE and not fresh:
            code = str(waiting.data.get("code") or "")
            await ctx.reply(ctx.t("realname.note.running", code=code))
            return
        if waiting is not None:  # anything else in progress ends here, as a command ends a conversation
            await conversations.drop(ctx.chat.id, ctx.user.id)
        left = await self._cooldown_left(ctx.user.id)
        if left > 0:
            await ctx.reply(ctx.t("realname.note.cooldown", minutes=max(1, round(left / 60))))
            return
        ctx.data.clear()
        ctx.data.update(fresh=fresh, tries=0)
        await ctx.expect_text("identity")
        await ctx.reply(ctx.t("realname.identity.ask"))

    async def identified(self, ctx: Context, identity: Identity) -> None:
        """The name and ID number passed the local checks: issue the first code."""
        await self._issue(ctx, seal_identity(self.sealer, identity, self._context(ctx)), new_id(), lead=None)
        del identity

    def _context(self, ctx: Context) -> str:
        return f"realname:{ctx.chat.id}:{ctx.user.id}"

    async def _issue(self, ctx: Context, sealed: str, attempt: str, *, lead: str | None, **params: Any) -> None:
        """A new code from the provider; the step waits for the note reading it."""
        provider = self.provider()
        try:
            code: Code = await ctx.run_blocking(provider.new_code)
        except (TemporarilyUnavailable, RateLimited) as err:
            await ctx.finish()
            log.warning("realname: no code for user %s: %s", ctx.user.id, err.detail)
            await self._alert_down(err)
            await ctx.reply(ctx.t("realname.note.down_code"))
            return
        valid = min(code.valid_for, self.config["code_minutes"] * 60)
        ctx.data.clear()
        ctx.data.update(
            attempt=attempt, code=code.code, session=code.session, issued=self.clock(), valid=valid, sealed=sealed
        )
        await ctx.expect_video(NOTE)
        lines = [ctx.t(lead, **params)] if lead else []
        lines.append(
            ctx.t(
                "realname.note.record",
                code=code.code,
                minutes=max(1, int(valid // 60)),
                seconds=int(self.config["max_note_seconds"]),
            )
        )
        await ctx.reply("\n".join(lines))

    # -- the note ----------------------------------------------------------------------------------------
    async def on_note(self, ctx: Context) -> None:
        """What came to the note step: refused before any provider call unless it is a fresh, own video note
        within the limits; then the check and its answer."""
        data, note, now = ctx.data, ctx.video, self.clock()
        if note is None or note.kind != "video_note":
            what = "photo" if ctx.photos else note.kind if note is not None else "text"
            await self._again(ctx, f"realname.note.not_a_note.{what}")
            return
        if note.forwarded:
            await self._again(ctx, "realname.note.forwarded")
            return
        limit_seconds = float(self.config["max_note_seconds"])
        if note.duration is not None and note.duration > limit_seconds:
            await self._again(ctx, "realname.note.too_long", seconds=int(note.duration), limit=int(limit_seconds))
            return
        if note.duration is not None and note.duration < MIN_NOTE_SECONDS:
            await self._again(ctx, "realname.note.too_short")
            return
        provider = self.provider()
        limit = min(provider.max_video_bytes, int(self.services.config["telegram"]["max_file_mb"] * 1024 * 1024))
        if note.size is not None and note.size > limit:
            await self._again(ctx, "realname.note.too_large", mb=round(limit / 1024 / 1024, 1))
            return
        sent = note.sent_at if note.sent_at is not None else now  # a note replayed after a restart: when it came
        if sent > float(data["issued"]) + float(data["valid"]):
            log.info("realname: a note from user %s came after its code expired: a new code", ctx.user.id)
            await self._issue(ctx, data["sealed"], data["attempt"], lead="realname.note.expired")
            return
        if note.sent_at is not None and note.sent_at - (note.duration or 0) < float(data["issued"]) - CLOCK_SLACK:
            log.info("realname: a note from user %s was recorded before its code: a new code", ctx.user.id)
            await self._issue(ctx, data["sealed"], data["attempt"], lead="realname.note.too_early")
            return
        identity = open_identity(self.sealer, str(data.get("sealed") or ""), self._context(ctx))
        if identity is None:  # the key changed (the console restarted): nothing to check against
            await ctx.finish()
            await ctx.reply(ctx.t("realname.note.lost"))
            return
        # the step stays in the state store while the provider checks: a kill -9 now replays the note into it
        data["note"] = note.ref or ""
        await ctx.expect_video(NOTE)
        code = Code(str(data["code"]), str(data.get("session") or ""), float(data["valid"]))
        try:
            video = await note.read()
            if len(video) > limit:
                note.wipe()
                await self._again(ctx, "realname.note.too_large", mb=round(limit / 1024 / 1024, 1))
                return
            async with ctx.progress():
                result: NoteResult = await ctx.run_blocking(provider.check, code, identity, video)
        except BadImage:  # the download path refused it (over telegram.max_file_mb)
            await self._again(ctx, "realname.note.too_large", mb=round(limit / 1024 / 1024, 1))
            return
        except (TemporarilyUnavailable, RateLimited) as err:
            await ctx.finish()
            log.warning("realname: the note of user %s could not be checked: %s", ctx.user.id, err.detail)
            await self._alert_down(err)
            await ctx.reply(ctx.t("realname.note.down"))
            return
        except UserFacingError:
            await ctx.finish()
            raise
        finally:
            note.wipe()
            video = b""
        log.info("realname: note of user %s checked: %s", ctx.user.id, "passed" if result.passed else result.reason)
        retry = not result.passed and result.reason in RETRY_REASONS
        if retry and await self._failed(ctx.user.id) < self.config["max_failures"]:
            await self._issue(ctx, data["sealed"], data["attempt"], lead=f"realname.note.reason.{result.reason}")
            return
        await self._answer(ctx, provider, identity, result)

    async def _again(self, ctx: Context, text_key: str, **params: Any) -> None:
        """Refuse what came and keep waiting for the note (same code)."""
        await ctx.expect_video(NOTE)
        await ctx.reply(ctx.t(text_key, **params) + "\n" + ctx.t("realname.note.again", code=ctx.data["code"]))

    # -- the answer --------------------------------------------------------------------------------------
    async def _answer(self, ctx: Context, provider: NoteProvider, identity: Identity, result: NoteResult) -> None:
        """The verdict: a session row (state and scores only), the answer through the outbox (once per attempt)."""
        data, now, db = ctx.data, self.clock(), self.services.run_db
        attempt = str(data["attempt"])
        if result.passed:
            await self.services.state.delete(self._fails_key(ctx.user.id))
        elif result.reason not in RETRY_REASONS:
            await self._failed(ctx.user.id)
        cooling = not result.passed and await self._cooldown_left(ctx.user.id) > 0
        if await db(self.verifier.sessions.get, attempt) is None:
            session = Session(
                id=attempt,
                user_id=ctx.user.id,
                chat_id=ctx.chat.id,
                lang=ctx.lang,
                provider=provider.session_name,
                reference=attempt,
                state=PASSED if result.passed else FAILED,
                score=result.score,
                liveness=result.liveness,
                spoofing=None,
                created_at=float(data["issued"]),
                expires_at=now,
                checked_at=now,
                finished_at=now,
                notified_at=now,  # the answer is in the outbox (below): the job has nothing to tell
            )
            await db(self.verifier.sessions.create, session)
        text = note_outcome(self.services.catalogue, ctx.lang, self.config, result, identity, attempt, cooling)
        await self.services.outbox.put(ctx.chat.id, Reply(text), key=f"realname:{attempt}")
        await ctx.finish()
        if self.verifier.gate is not None:  # the verified-only groups this user asked to join
            await self.verifier.gate.after_verdict(ctx.user.id, result.passed)

    # -- failures and the cool-down ----------------------------------------------------------------------
    def _fails_key(self, user_id: int) -> str:
        return keys.plugin("realname", "note-fails", user_id)

    async def _failed(self, user_id: int) -> int:
        """Count one more failed note for ``user_id``; the count (a cool-down starts at ``max_failures``)."""
        state = self.services.state
        ttl = self.config["cooldown_minutes"] * 60
        for _ in range(5):  # a conditional update: concurrent failures of one user (two chats) all count
            old = await state.get(self._fails_key(user_id))
            count = int((old or {}).get("n", 0)) + 1
            if await state.replace(self._fails_key(user_id), old, {"n": count, "at": self.clock()}, ttl):
                return count
        return int(self.config["max_failures"])

    async def _cooldown_left(self, user_id: int) -> float:
        """Seconds until ``user_id`` may try again (0: now)."""
        value = await self.services.state.get(self._fails_key(user_id))
        if not value or int(value.get("n", 0)) < self.config["max_failures"]:
            return 0.0
        return max(0.0, float(value.get("at", 0)) + self.config["cooldown_minutes"] * 60 - self.clock())

    async def _alert_down(self, err: UserFacingError) -> None:
        """Tell the admins (at most once an hour) that the provider could not check a note."""
        now = self.services.state.clock()
        if not await self.services.state.add(keys.plugin("realname", "alerted", "note-down"), now, ALERT_EVERY):
            return
        lang = self.services.config["language"]["default"]
        text = self.services.catalogue.text(lang, "admin.alert", command="verify", detail=err.detail)
        for admin in self.services.config["access"]["admins"]:
            await self.services.outbox.put(
                admin, Reply(text), key=keys.join("alert", "realname-note-down", int(now), admin)
            )


def note_outcome(
    catalogue: Any,
    lang: str,
    config: dict[str, Any],
    result: NoteResult,
    identity: Identity,
    reference: str,
    cooling: bool = False,
) -> str:
    """The answer to a note: the verdict, the masked name and ID number, the scores, why it failed."""

    def t(text_key: str, **params: Any) -> str:
        return str(catalogue.text(lang, text_key, **params))

    lines = [t("realname.passed" if result.passed else "realname.failed")]
    lines.append(t("realname.name", name=mask_name(identity.name)))
    lines.append(t("realname.id_number", id_number=mask_id_number(identity.id_number)))
    if result.score is not None:
        lines.append(t("realname.note.similarity", score=f"{result.score:g}"))
    if not result.passed:
        lines.append(t(f"realname.note.reason.{result.reason or 'other'}"))
    if cooling:
        lines.append(t("realname.note.cooldown", minutes=int(config["cooldown_minutes"])))
    lines.append(t("realname.reference", session=reference))
    return "\n".join(lines)


__all__ = ["NOTE", "NoteFlow", "note_outcome"]
