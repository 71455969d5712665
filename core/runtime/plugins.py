"""The plugin manager: find plugins, load only the enabled ones, validate their config, collect commands.

Built-in plugins are the packages under ``plugins/``; third-party plugins are entry points of the group
``aipbot`` (``[project.entry-points.aipbot] myplugin = "mypackage.plugin"``). Both are known by name
*without importing them*; a plugin runs only when config.yaml has a section for it that does not say
``enabled: false``. Every other known plugin is blocked in pluggy before anything is loaded, so its code
is never imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
from pathlib import Path
from typing import Any

import pluggy

from core.contract import hookspecs
from core.contract.chat import Command, Services
from core.contract.i18n import gaps
from core.pipeline.defaults import NAME as DEFAULT_PLUGIN
from core.pipeline.defaults import DefaultPlugin
from core.runtime.config import ConfigError, check_section

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "plugins"
ENTRY_POINT_GROUP = hookspecs.PROJECT
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


def builtin_plugins() -> dict[str, str]:
    """Built-in plugin name → module, from the packages under ``plugins/`` (nothing imported)."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {
        p.name: f"plugins.{p.name}"
        for p in sorted(BUILTIN_DIR.iterdir())
        if (p / "__init__.py").exists() and not p.name.startswith("_")
    }


def entry_point_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Third-party plugin name → entry point (group ``aipbot``; nothing imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def instantiate(module: Any) -> Any:
    """What pluggy registers for a plugin module: an instance of its ``Plugin`` class when it has one (so
    each bot gets its own engines, clients and state), else the module itself (hooks as functions)."""
    if isinstance(module, type):  # the class itself (a test kit's ``plugins={"name": Plugin}``)
        return module()
    factory = getattr(module, "Plugin", None)
    return factory() if isinstance(factory, type) else module


def enabled_names(config: dict[str, Any]) -> list[str]:
    """The plugins config.yaml enables: a section present and not ``enabled: false``."""
    return [name for name, section in config["plugins"].items() if (section or {}).get("enabled", True)]


class PluginManager:
    """Loads the enabled plugins into a pluggy manager and asks them for schemas, messages and commands."""

    def __init__(self, config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """``extra``: plugin objects by name, known like built-ins (for tests and embedding)."""
        self.config = config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        builtins = builtin_plugins()
        third_party = entry_point_plugins()
        extra = extra or {}
        known = sorted(set(builtins) | set(third_party) | set(extra))
        for name in config["plugins"]:
            if name not in known:
                raise ConfigError(f"plugins.{name}", f"unknown plugin (available: {', '.join(known) or 'none'})")
        self.enabled = enabled_names(config)
        for name in known:
            if name not in self.enabled:
                self.pm.set_blocked(name)
        self.pm.register(DefaultPlugin(), name=DEFAULT_PLUGIN)
        for name in self.enabled:
            if name in extra:
                self.pm.register(instantiate(extra[name]), name=name)
            elif name in builtins:
                self.pm.register(instantiate(importlib.import_module(builtins[name])), name=name)
        for name, entry_point in third_party.items():
            if name in self.enabled and not self.pm.has_plugin(name):
                self.pm.register(instantiate(entry_point.load()), name=name)
        self.pm.check_pending()
        self._validate_sections()

    def _impls(self, hook: str) -> list[tuple[str, Any]]:
        """(plugin name, hook function) for each plugin implementing ``hook``, in load order."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return [(impl.plugin_name, impl) for impl in reversed(impls)]

    def _call(self, impl: Any, **kwargs: Any) -> Any:
        return impl.function(**{name: kwargs[name] for name in impl.argnames})

    def _validate_sections(self) -> None:
        schemas = {name: self._call(impl) or {} for name, impl in self._impls("aipbot_config_schema")}
        for name in self.enabled:
            section = self.config["plugins"].get(name) or {}
            validated = check_section(schemas.get(name, {}), section, f"plugins.{name}", allow=("enabled",))
            validated["enabled"] = True
            self.config["plugins"][name] = validated

    def messages(self) -> list[dict[str, dict[str, str]]]:
        """Every plugin's message catalogue. What one lacks is logged (a missing ``zh`` text is shown in English,
        a missing ``en`` one as its key); the built-in plugins are tested to lack nothing."""
        out = []
        for plugin, impl in reversed(self._impls("aipbot_messages")):  # pluggy's order: the last loaded first
            messages = self._call(impl)
            if not messages:
                continue
            problems = gaps(messages)
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                log.warning(
                    "plugin %s: its catalogue is incomplete, %s%s; a missing zh text is shown in English",
                    plugin,
                    "; ".join(problems[:5]),
                    more,
                )
            out.append(messages)
        return out

    def configure(self, services: Services) -> None:
        """Every plugin's ``aipbot_configure``, once, in load order, with its own config section."""
        for plugin, impl in self._impls("aipbot_configure"):
            self._call(impl, config=self.config["plugins"].get(plugin, {}), services=services)

    def commands(self, services: Services) -> list[Command]:
        """All plugin commands, each tagged with its plugin; clashes and bad names stop start-up."""
        out: dict[str, Command] = {}
        for plugin, impl in self._impls("aipbot_commands"):
            for command in self._call(impl, config=self.config["plugins"].get(plugin, {}), services=services) or []:
                command.plugin = plugin
                where = f"plugins.{plugin}"
                if not _COMMAND_NAME.match(command.name):
                    raise ConfigError(where, f"command name {command.name!r} must match [a-z0-9_]{{1,32}}")
                if command.name in out and out[command.name].plugin == DEFAULT_PLUGIN:
                    raise ConfigError(where, f"command /{command.name} is built in")
                if command.name in out:
                    raise ConfigError(where, f"command /{command.name} is also offered by {out[command.name].plugin}")
                out[command.name] = command
        return list(out.values())

    def web_routes(self, services: Services) -> list[tuple[str, Any]]:
        """(plugin name, Starlette route) for every route the plugins serve (``aipbot_web_routes``)."""
        return [
            (plugin, route)
            for plugin, impl in self._impls("aipbot_web_routes")
            for route in self._call(impl, config=self.config["plugins"].get(plugin, {}), services=services) or []
        ]

    def status(self, services: Services) -> dict[str, str]:
        """Plugin name → its one-line status for ``/plugins`` (empty where a plugin says nothing)."""
        lines = {name: "" for name in self.enabled}
        for plugin, impl in self._impls("aipbot_status"):
            lines[plugin] = str(self._call(impl, config=self.config["plugins"][plugin], services=services) or "")
        return lines

    def startup(self, services: Services) -> None:
        """Every plugin's ``aipbot_startup``, in load order, with its own config section."""
        for plugin, impl in self._impls("aipbot_startup"):
            self._call(impl, config=self.config["plugins"].get(plugin, {}), services=services)

    def shutdown(self, services: Services) -> None:
        """Every plugin's ``aipbot_shutdown``, in reverse load order; one failing does not stop the others."""
        for plugin, impl in reversed(self._impls("aipbot_shutdown")):
            try:
                self._call(impl, config=self.config["plugins"].get(plugin, {}), services=services)
            except Exception:
                log.exception("plugin %s failed to shut down", plugin)
