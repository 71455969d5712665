"""Who handles an incoming message: commands, photos, albums, deep links and button presses.

A transport turns what arrives into an :class:`Incoming` (an album is one ``Incoming`` with several
photos) and calls :meth:`Router.handle`. The router applies access control and quotas, then:

- ``/command args`` → the command (built-in or a plugin's); a photo command with no photo attached
  becomes *pending*: the user is asked for a photo, and the next one in this chat goes to it;
- plain text → the command that asked for it (``ctx.expect_text()``), else a hint;
- a photo: caption command → pending command → ``default_photo_command`` → a question with one
  button per photo command (the photos wait for the answer);
- ``/start <command>-<payload>`` → that command's ``on_deep_link``; a button made with
  ``ctx.button`` → its command's ``on_callback``.

Errors in handlers never escape: a :class:`UserFacingError` is shown in the user's language and logged
with its detail; anything else is logged with its traceback and the user gets an apology.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.chat import Button, Chat, Command, Context, Photo, Reply, Services, Transport, User
from core.errors import ProviderMisconfigured, QuotaExhausted, UserFacingError
from core.images import is_document

log = logging.getLogger(__name__)

ROUTE_PREFIX = "_route"  # callback data of the router's own "what should I do with this photo?" buttons
ADMIN_ALERTS = (ProviderMisconfigured, QuotaExhausted)  # errors only an admin can fix: the admins are told
ALERT_EVERY = 3600.0  # seconds between two alerts about the same problem


@dataclass
class Incoming:
    """One thing a user did, in transport-neutral form.

    ``error`` is a catalogue key the transport already decided on (e.g. a file over the download
    limit); the router tells the user and does nothing else.
    """

    user: User
    chat: Chat
    text: str = ""
    photos: list[Photo] = field(default_factory=list)
    message_id: int | None = None
    callback_data: str | None = None
    error: str | None = None


@dataclass
class _Pending:
    command: Command | None
    args: list[str]
    expires: float
    photos: list[Photo] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    wants_text: bool = False
    started: bool = False  # the handler already ran (it asked for more): the quota was counted then


BuiltinHandler = Callable[["Router", Incoming, Transport, list[str]], Awaitable[None]]


class Router:
    """Dispatches :class:`Incoming` events to commands. One router serves every transport."""

    def __init__(
        self,
        services: Services,
        commands: list[Command],
        *,
        status: Callable[[], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.config = services.config
        self.commands = {c.name: c for c in commands}
        self._status = status or (lambda: {})
        self._clock = clock
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._alerted: dict[tuple[str, str], float] = {}
        self._builtins: dict[str, BuiltinHandler] = {
            "start": Router._start,
            "help": Router._help,
            "cancel": Router._cancel,
            "plugins": Router._plugins,
        }

    # ----------------------------------------------------------------- helpers
    def t(self, user: User, key: str, **params: Any) -> str:
        return self.services.catalogue.text(user.language, key, **params)

    def photo_commands(self) -> list[Command]:
        return [c for c in self.commands.values() if c.takes_photos]

    def visible_commands(self, user: User | None = None) -> list[Command]:
        """Plugin commands this user may run (all non-admin ones when ``user`` is None)."""
        return [c for c in self.commands.values() if not c.admin_only or (user is not None and user.is_admin)]

    def _allowed(self, user: User) -> bool:
        allowed = self.config["access"]["allowed_users"]
        return user.is_admin or not allowed or user.id in allowed

    def _get_pending(self, key: tuple[int, int]) -> _Pending | None:
        pending = self._pending.get(key)
        if pending and pending.expires < self._clock():
            self._drop_pending(key)
            return None
        return pending

    def _drop_pending(self, key: tuple[int, int]) -> _Pending | None:
        """Forget pending state, wiping its photos and scratch data (whoever else still holds them)."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending.data.clear()
            pending.photos.clear()
        return pending

    def _set_pending(self, key: tuple[int, int], pending: _Pending) -> None:
        now = self._clock()
        for old in [k for k, p in self._pending.items() if p.expires < now and k != key]:
            self._drop_pending(old)
        replaced = self._pending.get(key)
        if replaced is not None and replaced.data is not pending.data:
            self._drop_pending(key)  # superseded: wipe its photos and scratch data too
        self._pending[key] = pending

    def _expiry(self) -> float:
        return self._clock() + self.config["pending_minutes"] * 60

    async def _say(
        self, transport: Transport, chat: Chat, text: str, buttons: list[list[Button]] | None = None
    ) -> None:
        await transport.send(chat.id, Reply(text, buttons or []))

    # ----------------------------------------------------------------- entry point
    async def handle(self, incoming: Incoming, transport: Transport) -> None:
        """Handle one event; never raises (errors are logged and the user is told)."""
        user, chat = incoming.user, incoming.chat
        try:
            if not self._allowed(user):
                log.info("refused user %s: not in access.allowed_users", user.id)
                await self._say(transport, chat, self.t(user, "access.denied"))
                return
            if incoming.error:
                await self._say(transport, chat, self.t(user, incoming.error))
                return
            if incoming.callback_data is not None:
                await self._callback(incoming, transport)
                return
            text = incoming.text.strip()
            if text.startswith("/"):
                await self._command(incoming, transport, text)
            elif incoming.photos:
                await self._photos(incoming, transport)
            else:
                await self._text(incoming, transport)
        except Exception:
            log.exception("unhandled error while handling an update from user %s", user.id)
            try:
                await self._say(transport, chat, self.t(user, "error.generic"))
            except Exception:
                log.exception("could not tell user %s about the error", user.id)

    # ----------------------------------------------------------------- commands
    async def _command(self, incoming: Incoming, transport: Transport, text: str) -> None:
        user, chat = incoming.user, incoming.chat
        head, _, rest = text[1:].partition(" ")
        name = head.split("@", 1)[0].lower()
        args = rest.split()
        if name in self._builtins:
            await self._builtins[name](self, incoming, transport, args)
            return
        command = self.commands.get(name)
        if command is None:
            await self._say(transport, chat, self.t(user, "router.unknown_command", command=f"/{name}"))
            return
        if command.admin_only and not user.is_admin:
            log.info("refused /%s to user %s: admins only", name, user.id)
            await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{name}"))
            return
        if command.takes_photos and not incoming.photos:
            if not await self._within_quota(command, user, consume=False):  # don't ask for a photo in vain
                await self._quota_refused(command, user, chat, transport)
                return
            self._set_pending((chat.id, user.id), _Pending(command, args, self._expiry()))
            key = f"{command.plugin}.{command.name}.prompt"
            prompt = self.t(user, key) if self.services.catalogue.has(key) else self.t(user, "router.send_photo")
            await self._say(transport, chat, prompt)
            return
        self._drop_pending((chat.id, user.id))
        await self._invoke(command, incoming, transport, args, incoming.photos, {})

    async def _text(self, incoming: Incoming, transport: Transport) -> None:
        key = (incoming.chat.id, incoming.user.id)
        pending = self._get_pending(key)
        if pending and pending.command is not None and pending.wants_text:
            del self._pending[key]
            await self._invoke(
                pending.command, incoming, transport, pending.args, [], pending.data, counted=pending.started
            )
            return
        await self._say(transport, incoming.chat, self.t(incoming.user, "router.text_hint"))

    async def _photos(self, incoming: Incoming, transport: Transport) -> None:
        user, chat = incoming.user, incoming.chat
        key = (chat.id, user.id)
        pending = self._get_pending(key)
        if pending and pending.command is not None and not pending.wants_text:
            del self._pending[key]
            await self._invoke(
                pending.command,
                incoming,
                transport,
                pending.args,
                incoming.photos,
                pending.data,
                counted=pending.started,
            )
            return
        default = self.config["default_photo_command"]
        if default and default in self.commands:
            await self._command(incoming, transport, f"/{default}")
            return
        choices = [c for c in self.photo_commands() if not c.admin_only or user.is_admin]
        if not choices:
            await self._say(transport, chat, self.t(user, "router.no_photo_commands"))
            return
        self._set_pending(key, _Pending(None, [], self._expiry(), photos=list(incoming.photos)))
        buttons = [[Button(self.t(user, c.help), callback_data=f"{ROUTE_PREFIX}:{c.name}")] for c in choices]
        await self._say(transport, chat, self.t(user, "router.what_to_do"), buttons)

    async def _callback(self, incoming: Incoming, transport: Transport) -> None:
        user, chat = incoming.user, incoming.chat
        name, _, data = (incoming.callback_data or "").partition(":")
        if name == ROUTE_PREFIX:
            pending = self._get_pending((chat.id, user.id))
            command = self.commands.get(data)
            if not pending or not pending.photos or command is None:
                await self._say(transport, chat, self.t(user, "router.photo_expired"))
                return
            del self._pending[(chat.id, user.id)]
            routed = Incoming(user, chat, f"/{command.name}", pending.photos, incoming.message_id)
            await self._command(routed, transport, f"/{command.name}")
            return
        command = self.commands.get(name)
        if command is None or command.on_callback is None:
            await self._say(transport, chat, self.t(user, "router.button_expired"))
            return
        if command.admin_only and not user.is_admin:
            await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{name}"))
            return
        ctx = self._context(command, incoming, transport, [], [], {})
        await self._run(ctx, command.on_callback(ctx, data))

    # ----------------------------------------------------------------- invoking plugins
    def _context(
        self,
        command: Command,
        incoming: Incoming,
        transport: Transport,
        args: list[str],
        photos: list[Photo],
        data: dict[str, Any],
    ) -> Context:
        key = (incoming.chat.id, incoming.user.id)
        ctx: Context

        def keep_pending(wants_text: bool) -> None:
            pending = _Pending(
                command, list(ctx.args), self._expiry(), data=ctx.pending, wants_text=wants_text, started=True
            )
            self._set_pending(key, pending)

        ctx = Context(
            services=self.services,
            transport=transport,
            user=incoming.user,
            chat=incoming.chat,
            command=command,
            args=args,
            text=incoming.text,
            photos=photos,
            message_id=incoming.message_id,
            keep_pending=keep_pending,
            pending=data,
        )
        return ctx

    async def _invoke(
        self,
        command: Command,
        incoming: Incoming,
        transport: Transport,
        args: list[str],
        photos: list[Photo],
        data: dict[str, Any],
        *,
        counted: bool = False,
    ) -> None:
        """Run ``command``; ``counted``: this continues an invocation whose quota use was already counted."""
        user, chat = incoming.user, incoming.chat
        if not command.documents and any(is_document(p.file_name, p.mime_type) for p in photos):
            await self._say(transport, chat, self.t(user, "error.not_an_image_file"))  # a PDF for /facematch
            return
        if not counted and not await self._within_quota(command, user, consume=True):
            await self._quota_refused(command, user, chat, transport)
            return
        if len(photos) > command.max_photos:
            await self._say(
                transport, chat, self.t(user, "router.too_many_photos", count=len(photos), used=command.max_photos)
            )
            photos = photos[: command.max_photos]
        ctx = self._context(command, incoming, transport, args, photos, data)
        if photos:
            async with ctx.progress():
                await self._run(ctx, command.handler(ctx))
        else:
            await self._run(ctx, command.handler(ctx))

    async def _within_quota(self, command: Command, user: User, *, consume: bool) -> bool:
        """Whether ``user`` may run ``command`` today; with ``consume``, count this use."""
        limit = self.config["access"]["daily_quota"].get(command.name)
        if limit is None or user.is_admin:
            return True
        store, day = self.services.store, dt.date.today().isoformat()
        if consume:
            return await self.services.run_blocking(store.use_quota, user.id, command.name, day, limit)
        return await self.services.run_blocking(store.quota_used, user.id, command.name, day) < limit

    async def _quota_refused(self, command: Command, user: User, chat: Chat, transport: Transport) -> None:
        limit = self.config["access"]["daily_quota"][command.name]
        await self._say(transport, chat, self.t(user, "quota.exhausted", command=f"/{command.name}", limit=limit))

    async def _run(self, ctx: Context, work: Awaitable[None]) -> None:
        try:
            await work
        except UserFacingError as err:
            log.warning("/%s for user %s: %s: %s", ctx.command.name, ctx.user.id, type(err).__name__, err.detail)
            await ctx.reply(ctx.t(err.key, **err.params))
            if isinstance(err, ADMIN_ALERTS):
                await self._alert_admins(ctx, err)

    async def _alert_admins(self, ctx: Context, err: UserFacingError) -> None:
        """Tell the admins (in private, at most once an hour per problem) what only they can fix."""
        code = getattr(err, "code", None)  # a provider's error code; its detail carries a per-request log id
        key = (type(err).__name__, f"code {code}" if code is not None else err.detail)
        now = self._clock()
        if now - self._alerted.get(key, -ALERT_EVERY) < ALERT_EVERY:
            return
        self._alerted = {k: t for k, t in self._alerted.items() if now - t < ALERT_EVERY}
        self._alerted[key] = now
        for admin in self.config["access"]["admins"]:
            text = self.services.catalogue.text(
                self.config["language"]["default"], "admin.alert", command=ctx.command.name, detail=err.detail
            )
            try:
                await ctx.transport.send(admin, Reply(text))
            except Exception as exc:  # the admin may never have opened a chat with the bot
                log.info("could not alert admin %s: %s", admin, type(exc).__name__)

    # ----------------------------------------------------------------- built-in commands
    async def _start(self, incoming: Incoming, transport: Transport, args: list[str]) -> None:
        user, chat = incoming.user, incoming.chat
        if args:
            name, sep, payload = args[0].partition("-")
            command = self.commands.get(name)
            if sep and command is not None and command.on_deep_link is not None:
                if command.admin_only and not user.is_admin:
                    await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{name}"))
                    return
                ctx = self._context(command, incoming, transport, args[1:], [], {})
                await self._run(ctx, command.on_deep_link(ctx, payload))
                return
            log.info("unknown /start payload from user %s", user.id)
        lines = [self.t(user, "start.greeting", name=user.name or "")]
        lines += [f"/{c.name} — {self.t(user, c.help)}" for c in self.visible_commands(user)]
        if not self.commands:
            lines.append(self.t(user, "help.no_commands"))
        lines.append(self.t(user, "start.more"))
        await self._say(transport, chat, "\n".join(lines))

    async def _help(self, incoming: Incoming, transport: Transport, args: list[str]) -> None:
        user = incoming.user
        lines = [self.t(user, "help.title")]
        lines += [f"/{c.name} — {self.t(user, c.help)}" for c in self.visible_commands(user)]
        if not self.commands:
            lines.append(self.t(user, "help.no_commands"))
        if self.photo_commands():
            lines.append("")
            lines.append(self.t(user, "help.photos"))
        lines.append("")
        lines.append(self.t(user, "help.builtins"))
        if user.is_admin:
            lines.append(self.t(user, "help.admin"))
        await self._say(transport, incoming.chat, "\n".join(lines))

    async def _cancel(self, incoming: Incoming, transport: Transport, args: list[str]) -> None:
        dropped = self._drop_pending((incoming.chat.id, incoming.user.id))
        key = "cancel.done" if dropped else "cancel.nothing"
        await self._say(transport, incoming.chat, self.t(incoming.user, key))

    async def _plugins(self, incoming: Incoming, transport: Transport, args: list[str]) -> None:
        user = incoming.user
        if not user.is_admin:
            await self._say(transport, incoming.chat, self.t(user, "access.admin_only", command="/plugins"))
            return
        status = self._status()
        lines = [self.t(user, "plugins.title")]
        for name in sorted(status):
            commands = ", ".join(f"/{c.name}" for c in self.commands.values() if c.plugin == name)
            line = f"• {name}" + (f" ({commands})" if commands else "")
            if status[name]:
                line += f": {status[name]}"
            lines.append(line)
        if not status:
            lines.append(self.t(user, "plugins.none"))
        await self._say(transport, incoming.chat, "\n".join(lines))
