"""Configuration: YAML, ``${VAR}`` substitution, and validation with errors that name the key.

``load(path)`` reads the file, substitutes ``${VAR}`` / ``${VAR:-default}`` in string values from the
environment, and validates everything but the plugin sections against :data:`SCHEMA`; plugin sections
are validated by :mod:`core.runtime.plugins` against the schema each enabled plugin declares. Any problem
raises :class:`ConfigError` whose text is one line: ``key.path: problem``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from core.contract.fields import REQUIRED, ConfigError, Field
from core.infra.redact import register_secret
from core.providers import schemas

__all__ = ["SCHEMA", "ConfigError", "Field", "check", "check_section", "load", "substitute", "validate"]


class _Substituted(str):
    """A string that came (wholly) from ``${VAR}``: may be read as a number or a boolean."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}


def substitute(value: Any, path: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of ``value`` (recursively)."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: substitute(v, _join(path, k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set (write ${{{name}:-}} to make it optional)")

    result = _VAR.sub(one, value)
    return _Substituted(result) if _VAR.fullmatch(value) else result


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(value: Any, want: type) -> Any:
    """Read a string that came from an environment variable as the number or boolean wanted."""
    if isinstance(value, _Substituted) and want in (int, float, bool):
        parsed = yaml.safe_load(value) if value.strip() else None
        if want is float and isinstance(parsed, int) and not isinstance(parsed, bool):
            return float(parsed)
        if isinstance(parsed, want) and not (want is int and isinstance(parsed, bool)):
            return parsed
    return value


def check(field: Field, value: Any, path: str) -> Any:
    """``value`` validated against ``field`` (with defaults filled in), or :class:`ConfigError`."""
    value = _coerce(value, field.type)
    want = field.type
    if value is None and want in (dict, list):  # `key:` with nothing under it
        value = want()
    ok = isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        got = (
            "nothing" if value is None else repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        )
        raise ConfigError(path, f"must be {_TYPE_NAMES.get(want, want.__name__)} (got {got})")
    if field.choices is not None and value not in field.choices:
        raise ConfigError(path, f"must be one of {', '.join(map(str, field.choices))} (got {value!r})")
    if field.min is not None and value < field.min:
        raise ConfigError(path, f"must be at least {field.min} (got {value!r})")
    if field.max is not None and value > field.max:
        raise ConfigError(path, f"must be at most {field.max} (got {value!r})")
    if want is list and field.item is not None:
        value = [check(field.item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if want is dict and field.schema is not None:
        value = check_section(field.schema, value, path)
    elif want is dict and field.values is not None:
        value = {str(k): check(field.values, v, _join(path, k)) for k, v in value.items()}
    if field.secret and isinstance(value, str):
        register_secret(value)
    if field.url and value:
        check_secure_url(value, path)
    if field.schemes and value:
        check_url_scheme(value, field.schemes, path)
    return str(value) if isinstance(value, _Substituted) else value


def check_section(schema: Mapping[str, Field], data: Any, path: str, *, allow: Sequence[str] = ()) -> dict[str, Any]:
    """A mapping validated key by key: unknown keys rejected (except those in ``allow``), defaults filled."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping (got {type(data).__name__})")
    for key in data:
        if key not in schema and key not in allow:
            known = ", ".join(schema)
            raise ConfigError(_join(path, key), f"unknown key (known here: {known})")
    out: dict[str, Any] = {k: data[k] for k in allow if k in data}
    for key, field in schema.items():
        if key in data:
            out[key] = check(field, data[key], _join(path, key))
        elif field.default is REQUIRED:
            raise ConfigError(_join(path, key), "is required")
        else:
            out[key] = check(field, field.default, _join(path, key)) if field.default is not None else None
    return out


def _section(help: str = "", **fields: Field) -> Field:
    return Field(dict, default={}, schema=fields, help=help)


SCHEMA: dict[str, Field] = {
    "telegram": _section(
        token=Field(str, default="", secret=True, help="bot token from @BotFather; empty: console chat"),
        base_url=Field(
            str, default="https://api.telegram.org/bot", url=True, help="Bot API base (a local Bot API server, tests)"
        ),
        base_file_url=Field(str, default="https://api.telegram.org/file/bot", url=True, help="file download base"),
        poll_timeout=Field(int, default=30, min=0, max=60, help="getUpdates long-poll seconds"),
        album_wait=Field(
            float, default=0.8, min=0.05, max=10, help="an album is complete this many seconds after its last part"
        ),
        album_max_wait=Field(float, default=5, min=0.05, max=60, help="the longest an album is waited for in all"),
        max_file_mb=Field(float, default=20, min=1, max=2000, help="largest file to download (Bot API: 20 MB)"),
        request_timeout=Field(float, default=10, min=0.1, max=300, help="seconds to wait for Telegram's answer"),
        send_retries=Field(int, default=5, min=0, max=20, help="retries of a request after 429, 5xx, network errors"),
        send_backoff=Field(float, default=0.5, min=0, max=60, help="first retry delay (s) after 5xx/network errors"),
        send_max_wait=Field(float, default=60, min=1, max=3600, help="longest retry_after (s) waited for"),
        rate_overall=Field(float, default=30, min=0, help="messages a second to all chats (0: no limit)"),
        rate_per_chat=Field(float, default=1, min=0, help="messages a second to one chat (0: no limit)"),
        chat_burst=Field(int, default=3, min=1, max=100, help="messages one chat may get in a row"),
        rate_per_group=Field(float, default=20, min=0, help="messages a minute to one group (0: no limit)"),
        # webhook mode (core/telegram/webhook.py); checked together with `server:` in validate()
        mode=Field(str, default="polling", choices=["polling", "webhook"], help="how updates reach the bot"),
        webhook_path=Field(str, default="/telegram/webhook", help="path of the webhook on the bot's web server"),
        webhook_secret=Field(
            str, default="", secret=True, help="X-Telegram-Bot-Api-Secret-Token; empty: derived from the bot token"
        ),
        webhook_max_connections=Field(
            int, default=40, min=1, max=100, help="simultaneous webhook deliveries Telegram may open"
        ),
        webhook_max_body_kb=Field(int, default=256, min=1, max=102400, help="largest webhook body (KB)"),
        webhook_source_networks=Field(
            list,
            default=["149.154.160.0/20", "91.108.4.0/22"],
            item=Field(str),
            help="networks webhook requests may come from; []: any",
        ),
        trusted_proxies=Field(
            list, default=[], item=Field(str), help="proxies whose X-Forwarded-For is believed (networks)"
        ),
        webhook_delete_on_stop=Field(bool, default=False, help="deleteWebhook at shutdown (one process only)"),
    ),
    "language": _section(default=Field(str, default="en", choices=["en", "zh"], help="when Telegram reports none")),
    "access": _section(
        admins=Field(list, default=[], item=Field(int), help="Telegram user ids with admin rights"),
        allowed_users=Field(list, default=[], item=Field(int), help="who may use the bot; empty: everyone"),
        daily_quota=Field(dict, default={}, values=Field(int, min=0), help="command -> uses per user per day"),
    ),
    "default_photo_command": Field(str, default="", help="command for a photo sent without one; empty: ask"),
    "pending_minutes": Field(float, default=5, min=0.1, max=1440, help="how long a command waits for its photo"),
    "workers": _section(
        io=Field(int, default=8, min=1, max=256, help="threads for provider calls"),
        cpu=Field(int, default=1, min=1, max=64, help="threads for local engines"),
    ),
    "http": _section(
        connect_timeout=Field(float, default=5, min=0.1, help="seconds"),
        read_timeout=Field(float, default=30, min=0.1, help="seconds"),
        retries=Field(int, default=2, min=0, max=10, help="retries of connection errors, timeouts and 5xx"),
        backoff=Field(float, default=0.5, min=0, help="first retry delay in seconds, doubled each time"),
    ),
    # providers.<name>: each provider module declares its own section (core.providers.schemas)
    "providers": Field(dict, default={}, help="provider name -> its credentials and settings"),
    "storage": _section(
        path=Field(str, default="data/aipbot.sqlite3", help="SQLite database file (unless cluster.database_url)")
    ),
    "cluster": _section(
        redis_url=Field(
            str,
            default="",
            schemes=("redis", "rediss"),
            help="Redis for the state port (redis://host:6379/0); empty: none",
        ),
        database_url=Field(
            str,
            default="",
            schemes=("postgresql", "postgresql+psycopg"),
            help="PostgreSQL for the durable records (postgresql://user:pass@host/db); empty: storage.path",
        ),
        # cluster processes (bot.py serve / bot.py worker, core/pipeline/cluster.py)
        broker_url=Field(
            str, default="", schemes=("redis", "rediss"), help="Celery's broker; empty: cluster.redis_url"
        ),
        queue=Field(str, default="aipbot", help="the Celery queue the front ends send to and the workers take from"),
        worker_processes=Field(int, default=1, min=1, max=64, help="processes per `bot.py worker` (one task each)"),
        task_time_limit=Field(
            float, default=600, min=5, max=86400, help="seconds a task may run before its worker process is replaced"
        ),
        visibility_timeout=Field(
            float, default=900, min=1, max=86400, help="seconds before a task a dead worker held goes to another"
        ),
        restore_seconds=Field(
            float, default=10, min=0.1, max=3600, help="how often workers look for tasks to give to another worker"
        ),
        chat_lock_seconds=Field(
            float, default=30, min=1, max=3600, help="a chat's lock lapses this long after its holder died"
        ),
        sweep_seconds=Field(
            float, default=60, min=0.1, max=3600, help="workers send tasks again for updates left waiting this long"
        ),
    ),
    "outbox": _section(
        backoff=Field(float, default=2, min=0.01, max=3600, help="seconds before the first retry, doubled each time"),
        max_backoff=Field(float, default=600, min=0.01, max=86400, help="the longest pause between two tries"),
        max_attempts=Field(int, default=40, min=1, max=1000, help="tries before a message is given up"),
        keep_days=Field(float, default=7, min=0, max=365, help="days a delivered key is remembered (no duplicates)"),
    ),
    "logging": _section(
        level=Field(str, default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]),
        format=Field(str, default="text", choices=["text", "json"], help="json: one JSON object per line"),
    ),
    "plugins": Field(dict, default={}, help="plugin name -> its section (enabled: true|false, …)"),
    # no `server:` section: no web server (config["server"] is None); see core/infra/web.py
    "server": Field(
        dict,
        default=None,
        schema={
            "enabled": Field(bool, default=True, help="false: no web server"),
            "listen": Field(str, default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
            "port": Field(int, default=8080, min=0, max=65535, help="TCP port (0: any free port)"),
            "public_url": Field(str, default="", url=True, help="the URL the world reaches the server at"),
            "metrics_token": Field(str, default="", secret=True, help="Bearer token for /metrics; empty: local only"),
            "max_body_kb": Field(int, default=1024, min=1, max=102400, help="largest request body (KB)"),
            "ready_cache": Field(float, default=5, min=0, max=300, help="seconds a getMe answer counts for /readyz"),
            "read_timeout": Field(
                float,
                default=10,
                min=0.1,
                max=600,
                help="seconds a client has to send a whole request (headers and body) from its connection or its "
                "previous response; else the connection is closed",
            ),
            "keep_alive": Field(
                float, default=5, min=0.1, max=600, help="seconds an idle kept-alive connection stays open"
            ),
            "max_connections": Field(
                int,
                default=200,
                min=1,
                max=100000,
                help="open connections at most: one more closes the one idle longest (or is refused if all are busy)",
            ),
            "max_header_kb": Field(int, default=16, min=1, max=1024, help="largest request line and headers (KB)"),
        },
        help="the bot's web server (health, metrics, webhook); absent: none",
    ),
}


_LOOPBACK = re.compile(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")


def check_secure_url(value: str, path: str) -> None:
    """:class:`ConfigError` unless ``value`` is an absolute https URL (or http to this machine)."""
    if not (value.startswith("https://") and len(value) > len("https://")) and not _LOOPBACK.match(value):
        raise ConfigError(
            path, f"must be an absolute https URL (plain http only to 127.0.0.1 or localhost; got {value!r})"
        )


def check_url_scheme(value: str, schemes: Sequence[str], path: str) -> None:
    """:class:`ConfigError` unless ``value`` is ``<scheme>://<something>`` with one of ``schemes``."""
    scheme, sep, rest = value.partition("://")
    if not (sep and rest and scheme in schemes):
        wanted = " or ".join(f"{s}://" for s in schemes)
        shown = value if "@" not in value else f"…@{value.rsplit('@', 1)[1]}"  # no password in the message
        raise ConfigError(path, f"must be a {wanted} URL (got {shown!r})")


#: What Telegram allows as a webhook ``secret_token``.
WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _check_webhook(config: dict[str, Any]) -> None:
    """The webhook keys, and what webhook mode needs from ``server:`` (a public URL)."""
    telegram = config["telegram"]
    secret = telegram["webhook_secret"]
    if secret and not WEBHOOK_SECRET.match(secret):
        raise ConfigError("telegram.webhook_secret", "must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    path = telegram["webhook_path"]
    if not path.startswith("/") or any(c in path for c in "?#{} "):
        raise ConfigError("telegram.webhook_path", f"must be a plain path starting with / (got {path!r})")
    for key in ("webhook_source_networks", "trusted_proxies"):
        for i, network in enumerate(telegram[key]):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"telegram.{key}[{i}]", f"not an IP network (got {network!r})") from None
    if telegram["mode"] != "webhook":
        return
    server = config["server"]
    if not server or not server.get("enabled", True):
        raise ConfigError("telegram.mode", "webhook needs the web server: add a server: section with public_url")
    if not server.get("public_url"):
        raise ConfigError("server.public_url", "is required in webhook mode (the URL Telegram posts updates to)")


def _check_database_url(url: str) -> None:
    """``cluster.database_url`` parsed (its password registered for redaction); one-line errors without it."""
    if not url:
        return
    from core.infra.store import StoreUnavailable, check_url

    try:
        check_url(url)
    except StoreUnavailable as err:
        raise ConfigError("cluster.database_url", str(err)) from None


def validate(raw: Any) -> dict[str, Any]:
    """The validated core configuration (plugin sections checked only for shape here)."""
    config = check_section({**SCHEMA, "providers": _section(**schemas())}, substitute(raw), "")
    _check_webhook(config)
    _check_database_url(config["cluster"]["database_url"])
    for name, section in config["plugins"].items():
        path = f"plugins.{name}"
        if not isinstance(section, dict):
            raise ConfigError(path, f"must be a mapping (got {type(section).__name__})")
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path}.enabled", f"must be true or false (got {enabled!r})")
    return config


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file; :class:`ConfigError` names the file or key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(str(path), f"invalid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "must be a YAML mapping at the top level")
    return validate(raw)
