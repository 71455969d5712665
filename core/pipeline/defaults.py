"""The built-in commands ``/start``, ``/help``, ``/cancel`` and ``/plugins``: an ordinary plugin that the
plugin manager always loads (as datasette ships its defaults), under the name :data:`NAME`."""

from __future__ import annotations

from typing import Any

from core.contract.chat import Command, Context, Services
from core.contract.hookspecs import hookimpl

NAME = "builtin"


class DefaultPlugin:
    """The commands every bot has; their texts are in the core catalogue."""

    def __init__(self) -> None:
        self.services: Any = None

    @hookimpl
    def aipbot_commands(self, services: Services) -> list[Command]:
        self.services = services
        return [
            Command("start", "menu.start", self.start, ends_conversation=False),
            Command("help", "menu.help", self.help, ends_conversation=False),
            Command("cancel", "menu.cancel", self.cancel),
            Command("plugins", "menu.plugins", self.plugins, admin_only=True, ends_conversation=False),
        ]

    def _commands(self, ctx: Context) -> list[str]:
        visible = [c for c in self.services.commands if c.plugin != NAME and (not c.admin_only or ctx.user.is_admin)]
        return [f"/{c.name} — {ctx.t(c.help)}" for c in visible] or [ctx.t("help.no_commands")]

    async def start(self, ctx: Context) -> None:
        lines = [ctx.t("start.greeting", name=ctx.user.name or ""), *self._commands(ctx), ctx.t("start.more")]
        await ctx.reply("\n".join(lines))

    async def help(self, ctx: Context) -> None:
        lines = [ctx.t("help.title"), *self._commands(ctx)]
        if any(c.takes_photos for c in self.services.commands):
            lines += ["", ctx.t("help.photos")]
        lines += ["", ctx.t("help.builtins")]
        if ctx.user.is_admin:
            lines.append(ctx.t("help.admin"))
        await ctx.reply("\n".join(lines))

    async def cancel(self, ctx: Context) -> None:
        await ctx.reply(ctx.t("cancel.done" if ctx.interrupted else "cancel.nothing"))

    async def plugins(self, ctx: Context) -> None:
        status = self.services.plugin_status()
        lines = [ctx.t("plugins.title")]
        for name in sorted(status):
            commands = ", ".join(f"/{c.name}" for c in self.services.commands if c.plugin == name)
            line = f"• {name}" + (f" ({commands})" if commands else "")
            if status[name]:
                line += f": {status[name]}"
            lines.append(line)
        if not status:
            lines.append(ctx.t("plugins.none"))
        await ctx.reply("\n".join(lines))
