"""Who handles an incoming message: commands, photos, albums, deep links and button presses.

A transport turns what arrives into an :class:`Incoming` (an album is one ``Incoming`` with several
photos) and calls :meth:`Router.handle`. After access control (:mod:`core.pipeline.middleware`):

- ``/command args`` → the command; it ends any conversation in progress. A photo command with no photo
  attached starts a conversation waiting for one (the user is asked for a photo);
- plain text → the conversation waiting for a text (``ctx.expect_text()``), else a hint;
- a photo: caption command → the conversation waiting for a photo → ``default_photo_command`` → a
  question with one button per photo command (the photos wait for the answer);
- ``/start <command>-<payload>`` → that command's ``on_deep_link``; a button made with ``ctx.button`` →
  the conversation that offered it (``ctx.expect_choice``), else its command's ``on_callback`` (both unpacked
  and checked by :mod:`core.contract.codec`).

Errors in handlers never escape: a :class:`UserFacingError` is shown in the user's language and logged
with its detail (and the admins are told when only they can fix it); anything else is logged with its
traceback and the user gets an apology.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from core.contract.chat import Button, Chat, Command, Context, Incoming, Photo, Reply, Services, Transport, User
from core.contract.codec import Packed
from core.contract.conversation import CHOICE, PHOTO, TEXT, VIDEO, Conversation
from core.contract.errors import UserFacingError
from core.infra.images import is_document
from core.infra.logjson import log_context
from core.infra.metrics import metrics_of
from core.pipeline.middleware import Access, AdminAlerts, Quotas

log = logging.getLogger(__name__)

__all__ = ["Incoming", "Router"]  # Incoming lives in core.contract.chat; transports import it from here too

ROUTE = "_route"  # the command name in the router's own "what should I do with this photo?" buttons


class Router:
    """Dispatches :class:`Incoming` events to commands. One router serves every transport."""

    def __init__(self, services: Services, commands: list[Command]) -> None:
        self.services = services
        self.config = services.config
        self.commands = {c.name: c for c in commands}
        self.conversations = services.conversations
        self.access = Access(self.config)
        self.quotas = Quotas(services)
        self.alerts = AdminAlerts(services)

    def t(self, user: User, key: str, **params: object) -> str:
        return self.services.catalogue.text(user.language, key, **params)

    async def _say(
        self, transport: Transport, chat: Chat, text: str, buttons: list[list[Button]] | None = None
    ) -> None:
        await transport.send(chat.id, Reply(text, buttons or []))

    # ----------------------------------------------------------------- entry point
    @log_context(lambda self, incoming, transport: {"chat": incoming.chat.id})
    async def handle(self, incoming: Incoming, transport: Transport) -> None:
        """Handle one event; never raises (errors are logged and the user is told)."""
        user, chat = incoming.user, incoming.chat
        try:
            if incoming.join_request is not None:  # before access: the plugin answers the request either way
                await self._join_request(incoming, transport)
            elif not self.access.allowed(user):
                log.info("refused user %s: not in access.allowed_users", user.id)
                await self._say(transport, chat, self.t(user, "access.denied"))
            elif await self._video_step(incoming, transport):
                pass  # a step waiting for a video note took it (or what came instead of one)
            elif incoming.error:
                await self._say(transport, chat, self.t(user, incoming.error))
            elif incoming.callback_data is not None:
                await self._callback(incoming, transport)
            elif incoming.text.strip().startswith("/"):
                await self._command(incoming, transport, incoming.text.strip())
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

    # ----------------------------------------------------------------- what arrived
    async def _command(self, incoming: Incoming, transport: Transport, text: str) -> None:
        user, chat = incoming.user, incoming.chat
        head, _, rest = text[1:].partition(" ")
        name, args = head.split("@", 1)[0].lower(), rest.split()
        command = self.commands.get(name)
        if command is None:
            await self._say(transport, chat, self.t(user, "router.unknown_command", command=f"/{name}"))
            return
        if name == "start" and args and await self._deep_link(incoming, transport, args):
            return
        if not self.access.may_run(command, user):
            log.info("refused /%s to user %s: admins only", name, user.id)
            await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{name}"))
            return
        if command.takes_photos and not incoming.photos:
            if not await self.quotas.within(command, user, consume=False):  # don't ask for a photo in vain
                await self._say(transport, chat, self.quotas.refusal(command, user))
                return
            await self.conversations.save(chat.id, user.id, Conversation(command.name, PHOTO, args), [])
            key = f"{command.plugin}.{command.name}.prompt"
            prompt = self.t(user, key) if self.services.catalogue.has(key) else self.t(user, "router.send_photo")
            await self._say(transport, chat, prompt)
            return
        interrupted = command.ends_conversation and await self.conversations.drop(chat.id, user.id) is not None
        await self._invoke(command, incoming, transport, args=args, photos=incoming.photos, interrupted=interrupted)

    async def _text(self, incoming: Incoming, transport: Transport) -> None:
        if not await self._continue(incoming, transport, TEXT, []):
            await self._say(transport, incoming.chat, self.t(incoming.user, "router.text_hint"))

    async def _photos(self, incoming: Incoming, transport: Transport) -> None:
        user, chat = incoming.user, incoming.chat
        if await self._continue(incoming, transport, PHOTO, incoming.photos):
            return
        default = self.config["default_photo_command"]
        if default and default in self.commands:
            await self._command(incoming, transport, f"/{default}")
            return
        choices = [c for c in self.commands.values() if c.takes_photos and self.access.may_run(c, user)]
        if not choices:
            await self._say(transport, chat, self.t(user, "router.no_photo_commands"))
            return
        await self.conversations.save(chat.id, user.id, Conversation(None, CHOICE), incoming.photos)
        codec = self.services.codec
        buttons = [[Button(self.t(user, c.help), callback_data=codec.callback(ROUTE, c.name))] for c in choices]
        await self._say(transport, chat, self.t(user, "router.what_to_do"), buttons)

    async def _video_step(self, incoming: Incoming, transport: Transport) -> bool:
        """A conversation waiting for a video note (``ctx.expect_video``) takes any message that is not a command
        or a button press, with its video (or photos, text) attached; False when none waits."""
        if incoming.callback_data is not None or incoming.text.strip().startswith("/"):
            return False
        if incoming.video is None and not incoming.photos and incoming.error is None and not incoming.text:
            return False
        return await self._continue(incoming, transport, VIDEO, incoming.photos, video=incoming.video)

    async def _continue(
        self,
        incoming: Incoming,
        transport: Transport,
        wants: str,
        photos: list[Photo],
        choice: Packed | None = None,
        **extra: Any,
    ) -> bool:
        """Deliver to the conversation waiting for this kind of message (for a ``choice``: a press of one of the
        buttons its command offered), if there is one; ``extra``: what else the handler's context gets."""
        chat, user = incoming.chat, incoming.user
        waiting = await self.conversations.get(chat.id, user.id)
        if waiting is None or waiting.wants != wants or waiting.command not in self.commands:
            return False
        if choice is not None and (choice.command != waiting.command or choice.data not in waiting.choices):
            return False
        conversation, kept = await self.conversations.take(chat.id, user.id, transport)  # type: ignore[arg-type]
        command = self.commands[waiting.command]
        metrics_of(self.services).conversation_step(command.name)
        more = {"args": conversation.args, "photos": photos, "conversation": conversation, "kept": kept, **extra}
        if choice is not None:
            more["choice"] = choice.data
        await self._invoke(command, incoming, transport, **more)
        return True

    async def _callback(self, incoming: Incoming, transport: Transport) -> None:
        user, chat = incoming.user, incoming.chat
        signed = {c.name: c.signed for c in self.commands.values()}  # on_callback, or a step's expect_choice
        packed = self.services.codec.open_callback(incoming.callback_data or "", {ROUTE: False, **signed})
        if packed is not None and packed.command == ROUTE:
            waiting = await self.conversations.get(chat.id, user.id)
            command = self.commands.get(packed.data)
            if waiting is None or waiting.wants != CHOICE or waiting.command is not None or command is None:
                await self._say(transport, chat, self.t(user, "router.photo_expired"))
                return
            _, photos = await self.conversations.take(chat.id, user.id, transport)  # type: ignore[arg-type]
            routed = Incoming(user, chat, f"/{command.name}", photos, incoming.message_id, key=incoming.key)
            await self._command(routed, transport, f"/{command.name}")
            return
        command = self.commands.get(packed.command) if packed else None
        waited = packed is not None and command is not None and self.access.may_run(command, user)
        if waited and await self._continue(incoming, transport, CHOICE, [], choice=packed):
            return
        if packed is None or command is None or command.on_callback is None:  # unknown, forged, or gone
            await self._say(transport, chat, self.t(user, "router.button_expired"))
            return
        if not self.access.may_run(command, user):
            await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{command.name}"))
            return
        ctx = self._context(command, incoming, transport)
        await self._run(ctx, command.on_callback(ctx, packed.data))

    async def _join_request(self, incoming: Incoming, transport: Transport) -> None:
        """A request to join a group: every command with ``on_join_request`` gets it."""
        handlers = [c for c in self.commands.values() if c.on_join_request is not None]
        if not handlers:
            log.info("a join request for chat %s: no plugin handles join requests", incoming.join_request)
        for command in handlers:
            ctx = self._context(command, incoming, transport)
            assert command.on_join_request is not None and incoming.join_request is not None
            await self._run(ctx, command.on_join_request(ctx, incoming.join_request))

    async def _deep_link(self, incoming: Incoming, transport: Transport, args: list[str]) -> bool:
        """``/start <payload>`` for a command's ``on_deep_link``; False when the payload is not one."""
        user, chat = incoming.user, incoming.chat
        linked = {c.name: c.signed for c in self.commands.values() if c.on_deep_link is not None}
        packed = self.services.codec.open_deep_link(args[0], linked)
        if packed is None:
            log.info("unknown /start payload from user %s", user.id)
            return False
        command = self.commands[packed.command]
        if not self.access.may_run(command, user):
            await self._say(transport, chat, self.t(user, "access.admin_only", command=f"/{command.name}"))
            return True
        ctx = self._context(command, incoming, transport, args=args[1:])
        assert command.on_deep_link is not None
        await self._run(ctx, command.on_deep_link(ctx, packed.data))
        return True

    # ----------------------------------------------------------------- invoking plugins
    def _context(self, command: Command, incoming: Incoming, transport: Transport, **more: Any) -> Context:
        """The Context of ``command`` for what arrived; ``more``: args, photos, conversation, kept, interrupted."""
        return Context(
            services=self.services, transport=transport, user=incoming.user, chat=incoming.chat, command=command,
            text=incoming.text, message_id=incoming.message_id, **more,
        )  # fmt: skip

    @log_context(lambda self, command, *args, **more: {"plugin": command.plugin, "command": command.name})
    async def _invoke(self, command: Command, incoming: Incoming, transport: Transport, **more: Any) -> None:
        """Run ``command``; a continued conversation whose quota use was counted is not counted again."""
        user, chat, photos = incoming.user, incoming.chat, more.get("photos", [])
        counted = more.get("conversation") is not None and more["conversation"].counted
        if not command.documents and any(is_document(p.file_name, p.mime_type) for p in photos):
            await self._say(transport, chat, self.t(user, "error.not_an_image_file"))  # a PDF for /facematch
            return
        if not counted and not await self.quotas.within(command, user, consume=True, key=incoming.key):
            await self._say(transport, chat, self.quotas.refusal(command, user))
            return
        if len(photos) > command.max_photos:
            text = self.t(user, "router.too_many_photos", count=len(photos), used=command.max_photos)
            await self._say(transport, chat, text)
            more["photos"] = photos = photos[: command.max_photos]
        ctx = self._context(command, incoming, transport, **more)
        if photos:
            async with ctx.progress():
                await self._run(ctx, command.handler(ctx))
        else:
            await self._run(ctx, command.handler(ctx))

    async def _run(self, ctx: Context, work: Awaitable[None]) -> None:
        outcome = "error"  # anything but a UserFacingError goes on to handle(), which apologises
        try:
            await work
            outcome = "ok"
        except UserFacingError as err:
            outcome = "user_error"
            log.warning("/%s for user %s: %s: %s", ctx.command.name, ctx.user.id, type(err).__name__, err.detail)
            await ctx.reply(ctx.t(err.key, **err.params))
            await self.alerts.maybe_alert(ctx, err)
        finally:
            metrics_of(self.services).command_handled(ctx.command.name, outcome)
