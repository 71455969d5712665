"""The process roles over one assembled :class:`~core.runtime.app.App`: how each starts and stops.

- ``bot`` (``bot.py``): one process does everything — polling (``getUpdates`` → journal → local queues) or the
  webhook, the handlers, sending;
- ``serve`` (``bot.py serve``): a cluster front end — the webhook, journaled, one Celery task per chat;
- ``worker`` (``bot.py worker``): a cluster worker — handles the chats its tasks name (:mod:`core.runtime.worker`);
- ``console`` (``bot.py --console``): the terminal chat (:mod:`core.console.terminal`).

With polling, each ``getUpdates`` batch is journaled before the next ``getUpdates`` confirms it; any webhook
left set is deleted first (``getUpdates`` is a 409 while one is set). With a webhook, ``setWebhook`` at start
(tried again with a growing pause until Telegram takes it; ``/readyz`` says so meanwhile); at stop the webhook
stays set unless ``telegram.webhook_delete_on_stop`` (another process may still serve it).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from core.runtime.app import App
from core.telegram.botapi import TelegramBot

log = logging.getLogger(__name__)

#: Seconds a shutdown waits for updates being handled; the rest are replayed at the next start.
STOP_WAIT = 20.0
#: The longest pause between two ``setWebhook`` attempts when Telegram did not take the webhook.
MAX_WEBHOOK_BACKOFF = 300.0


class TelegramProcess:
    """The life cycle of an :class:`App` on Telegram in its role (``bot``, ``serve`` or ``worker``)."""

    def __init__(self, app: App) -> None:
        if app.telegram is None or app.intake is None:
            raise ValueError("the app has no Telegram side (no telegram.token, or another transport)")
        self.app = app
        self.bot: TelegramBot = app.telegram
        self.intake = app.intake
        self.webhook = app.webhook
        self.config = app.config["telegram"]
        self._poller: asyncio.Task[None] | None = None
        self._webhook_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (getMe), set the command menu, start the plugins, replay what an earlier run left unfinished,
        then poll (or set the webhook and take updates on it)."""
        await self.bot.start()
        if self.app.role != "worker":
            await self.bot.set_commands(self._menus())
        self.app.start()
        log.info("connected to Telegram as @%s", self.bot.username)
        await self.intake.start(prune=self.app.role != "serve")
        if self.app.role == "worker":
            return
        if self.webhook is not None:
            self.webhook.open()  # from now on the endpoint records (before: 503)
            if not await self._set_webhook():
                self._webhook_task = asyncio.get_running_loop().create_task(
                    self._keep_setting_webhook(), name="aipbot-set-webhook"
                )
            return
        await self.bot.delete_webhook()  # polling while a webhook is set draws 409 Conflict
        self._poller = asyncio.get_running_loop().create_task(
            self.intake.poll(self.bot.get_updates), name="aipbot-poll"
        )

    def _menus(self) -> dict[str, list[tuple[str, str]]]:
        catalogue = self.app.catalogue
        menus = {}
        for lang in ("en", "zh"):
            entries = [(c.name, catalogue.text(lang, c.help)) for c in self.app.commands if not c.admin_only]
            entries += [("help", catalogue.text(lang, "menu.help")), ("cancel", catalogue.text(lang, "menu.cancel"))]
            menus[lang] = entries
        return menus

    async def stop(self) -> None:
        """Stop polling (or taking webhook updates: 503 from now on, so Telegram delivers them again, here or to
        another process), let the updates being handled finish (at most :data:`STOP_WAIT` seconds: the rest
        are replayed at the next start), then stop the outbox, the plugins and the Bot API connection."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self.webhook is not None:
            self.webhook.close()
            if self._webhook_task is not None:
                self._webhook_task.cancel()
                await asyncio.gather(self._webhook_task, return_exceptions=True)
                self._webhook_task = None
            if self.config["webhook_delete_on_stop"] and self.webhook.registered:
                await self.bot.delete_webhook()
            self.webhook.mark_registered(False)
        await self.intake.stop(STOP_WAIT)
        if self.webhook is None and self.app.role != "worker":
            await self.bot.confirm(self.intake.confirmable())
        await self.app.services.outbox.stop()
        self.app.stop()
        await self.bot.stop()

    # ------------------------------------------------------------------ webhook
    def webhook_url(self) -> str:
        """Where Telegram posts updates: ``server.public_url`` + ``telegram.webhook_path``."""
        return self.app.web.url(self.config["webhook_path"])

    async def _set_webhook(self) -> bool:
        assert self.webhook is not None
        registered = await self.bot.set_webhook(self.webhook_url(), self.webhook.secret)
        self.webhook.mark_registered(registered)
        return registered

    async def _keep_setting_webhook(self) -> None:
        """Try ``setWebhook`` again with a growing pause (at most :data:`MAX_WEBHOOK_BACKOFF`) until it succeeds;
        ``/readyz`` names the webhook not ready meanwhile."""
        backoff = 2.0
        while True:
            await asyncio.sleep(backoff)
            if await self._set_webhook():
                return
            backoff = min(MAX_WEBHOOK_BACKOFF, backoff * 2)


def run_telegram(app: App) -> None:
    """Poll Telegram (or serve the webhook) until SIGINT or SIGTERM, then shut down cleanly (updates being
    handled may finish)."""
    asyncio.run(_serve(TelegramProcess(app)))


async def _serve(process: TelegramProcess) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await process.start()
        await stopping.wait()
    finally:
        await process.stop()
        await process.app.web.closed()  # the web server finishes its requests on this loop
