"""The plugin contract: aipbot's pluggy hook specifications.

A plugin is an object (recommended: a class whose methods are marked ``@hookimpl``; a module named as a
plugin may define it as ``Plugin``, and one instance is made per bot) or a module with functions marked
``@hookimpl``, whose names are the hooks below.
Built-in plugins live in ``plugins/<name>/``; third-party plugins are registered by the entry-point
group ``aipbot`` (``name = "package.module"``). Both load the same way, and only when
``plugins.<name>.enabled`` is true in config.yaml: a disabled plugin is never imported.

Hooks are synchronous and declarative: behaviour is returned as data (``Command`` objects with async
handlers), because pluggy does not await. An implementation may take any subset of a hook's arguments.
Every hook is optional.
"""

from __future__ import annotations

from typing import Any

import pluggy

from core.contract.chat import Command, Services
from core.contract.fields import Field

PROJECT = "aipbot"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aipbot_config_schema() -> dict[str, Field]:
    """The schema of this plugin's section of config.yaml: ``{key: core.contract.fields.Field(...)}``.

    ``enabled`` is implied. Unknown keys, wrong types and values outside ``choices`` stop start-up with
    a message naming the key path (``plugins.ocr.engine: …``). Defaults fill missing keys, and the
    validated section is what ``aipbot_configure(config)`` (and the other hooks' ``config``) and ``ctx.config``
    receive.
    """


@hookspec
def aipbot_messages() -> dict[str, dict[str, str]]:
    """This plugin's message catalogue: ``{"en": {key: text}, "zh": {key: text}}``.

    Keys start with the plugin's name (``ocr.no_text``); texts are ``str.format`` templates. Usually
    ``core.contract.i18n.load_dir(Path(__file__).parent / "locale")``. Every user-facing string goes here.
    """


@hookspec
def aipbot_configure(config: dict[str, Any], services: Services) -> None:
    """Called once, when the bot is assembled, with this plugin's validated config section and the bot's services:
    before any other hook that takes them (commands, routes, status, startup). A plugin object keeps what it
    needs on ``self`` here, so its other hooks need no arguments. It must not do slow work (that is
    ``aipbot_startup``'s, in the background). A :class:`~core.contract.fields.ConfigError` raised here stops
    start-up with its one line, like a schema error.
    """


@hookspec
def aipbot_commands(config: dict[str, Any], services: Services) -> list[Command]:
    """The commands this plugin offers (``config`` and ``services`` are given again for module plugins; a plugin
    object has them from ``aipbot_configure``).

    Command names are unique across plugins (a clash stops start-up). ``/help`` and Telegram's
    command menu are generated from what this hook returns.
    """


@hookspec
def aipbot_status(config: dict[str, Any], services: Services) -> str:
    """One line for the admins' ``/plugins`` list: which engine or provider this plugin uses now."""


@hookspec
def aipbot_web_routes(config: dict[str, Any], services: Services) -> list[Any]:
    """Starlette routes this plugin serves on the bot's web server (``server:`` in config.yaml), e.g.
    ``[starlette.routing.Route("/verify/return/{ref}", self.on_return, methods=["GET"])]``.

    Collected once at start-up into ``services.web`` (the one route registry, which core modules such as the
    webhook use directly); a path registered twice stops start-up naming both owners, and ``/healthz``,
    ``/readyz`` and ``/metrics`` are the core's. Endpoints are ``async def endpoint(request) -> Response``
    and must not block the loop (``services.run_db`` / ``run_blocking``); an endpoint that raises answers
    ``500 internal error`` (the traceback is logged, redacted). Without a ``server:`` section the routes are
    registered but not served: check ``services.web.enabled``; ``services.web.url(path)`` is the public URL.
    Plugins may import ``starlette``, never ``telegram``.
    """


@hookspec
def aipbot_startup(config: dict[str, Any], services: Services) -> None:
    """Called once when the bot starts, before the first update, with this plugin's config section.

    Open clients, start warming engines *in the background* (``services.run_cpu`` or a thread: start-up
    must not wait for a model), schedule periodic jobs. Must return quickly.
    """


@hookspec
def aipbot_shutdown(config: dict[str, Any], services: Services) -> None:
    """Called once when the bot stops: release what ``aipbot_startup`` acquired (engines, clients, threads).

    A plugin object keeps what it acquired on ``self``, so two bots in one process never share it.
    """
