"""Config schema fields: what a plugin (and a provider module) declares its ``config.yaml`` section with.

A plugin returns ``{key: Field(...)}`` from ``aipbot_config_schema``; a provider module has a ``SCHEMA`` of the
same shape. The validation itself (types, bounds, ``${VAR}``, URLs) is :mod:`core.runtime.config`'s; this module
holds only the declarations and :class:`ConfigError`, which a plugin raises for a problem no field can express
(``plugins.realname.plan_id: is required``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is the one line to show the admin."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


#: The default of a :class:`Field` that has none: the key is required.
REQUIRED: Any = object()


@dataclass(frozen=True)
class Field:
    """One key of a schema.

    - ``type``: ``str``, ``int``, ``float``, ``bool``, ``list`` or ``dict``;
    - ``default``: used when the key is missing (no default: the key is required);
    - ``choices``: allowed values; ``min`` / ``max``: bounds for numbers;
    - ``item``: the ``Field`` of each list element; ``schema``: the fixed keys of a dict;
      ``values``: the ``Field`` of each value of a dict with free keys;
    - ``secret``: the value is registered for log redaction;
    - ``schemes``: the value is a URL with one of these schemes (``("redis", "rediss")``); empty is allowed;
    - ``url``: a URL that carries keys, tokens or signatures (the bot token is in every Bot API URL): it
      must be ``https://`` (plain http only to this machine, for tests and a local server); empty is allowed;
    - ``help``: one line for the configuration reference.
    """

    type: type
    default: Any = REQUIRED
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    item: Field | None = None
    schema: Mapping[str, Field] | None = None
    values: Field | None = None
    secret: bool = False
    url: bool = False
    schemes: Sequence[str] = ()
    help: str = ""
