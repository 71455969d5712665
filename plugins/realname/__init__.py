"""Real-name verification: ``/verify`` sends the user to the provider's H5 page (Baidu "faceprint": ID card
and a live face check against the authoritative source; or WeBank/Tencent FaceID, which first asks for the
name and ID number in chat) and reports the outcome when they come back. See docs/realname.md and
docs/webank.md.

One module, one job:

- this one: the plugin object (:class:`Plugin`) and its hooks: config schema, messages, configure (the
  verifier), commands, status, start-up (the polling job) and shutdown;
- :mod:`plugins.realname.flow`: the verification flow (:class:`~plugins.realname.flow.Verifier`): ``/verify``,
  the identity question (a conversation step), the launch, the result and ``/forget``;
- :mod:`plugins.realname.job`: the polling job (retention, pending sessions, notifications);
- :mod:`plugins.realname.outcome`: the outcome message and the masking of names and ID numbers;
- :mod:`plugins.realname.stats`: the admins' ``/verifystat``;
- :mod:`plugins.realname.sessions`: the sessions table; :mod:`plugins.realname.providers`: Baidu and WeBank;
  :mod:`plugins.realname.identity`: reading a name and an ID number (GB 11643).

Names and ID numbers are only ever in memory while a reply is composed: never logged, never stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.contract.chat import Command, Services
from core.contract.fields import ConfigError, Field
from core.contract.hookspecs import hookimpl
from core.contract.i18n import load_dir
from plugins.realname.flow import Verifier
from plugins.realname.outcome import mask_id_number, mask_name
from plugins.realname.pages import ReturnPage
from plugins.realname.sessions import RETURN_PATH

__all__ = ["SCHEMA", "Plugin", "Verifier", "mask_id_number", "mask_name"]

#: ``plugins.realname``: provider, plan, URLs, pass rule, polling, window, reuse and retention.
SCHEMA: dict[str, Field] = {
    "method": Field(
        str,
        default="h5",
        choices=["h5", "video_note"],
        help="h5: the provider's page in the phone's browser; video_note: a round video note in the chat",
    ),
    "provider": Field(
        str,
        default="baidu",
        choices=["baidu", "webank", "tencent"],
        help="h5: baidu | webank; video_note: tencent (Tencent Cloud FaceID API 3.0) | baidu",
    ),
    "plan_id": Field(
        str, default="", help="Baidu: the H5 plan id from the real-name verification console (required for baidu)"
    ),
    "h5_base_url": Field(str, default="", url=True, help="the H5 page; empty: providers.baidu.h5_base_url"),
    "return_url": Field(
        str,
        default="",
        url=True,
        help="where the H5 page sends the user back ({session} = session id); empty: the bot's return page"
        " (with server.public_url), else its deep link. WeBank appends its callback parameters to it",
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
    "min_liveness": Field(
        float, default=0.3, min=0, max=1, help="passed: liveness score at least this (0–1; a 0 is 'not reported')"
    ),
    "max_spoofing": Field(
        float, default=0.00048, min=0, max=1, help="passed: spoofing score at most this (0–1; Baidu: 0.00048)"
    ),
    "min_similarity": Field(
        float, default=0, min=0, max=100, help="WeBank: also require similarity at least this (0–100; 0: off)"
    ),
    "min_live_rate": Field(
        float, default=0, min=0, max=100, help="WeBank: also require liveRate at least this (0–100; 0: off)"
    ),
    "min_sim": Field(
        float,
        default=70,
        min=0,
        max=100,
        help="video_note, tencent: passed only with Sim at least this (Tencent: ≥ 70 is the same person, "
        "a false accept rate of 1/1000 on older pages; 80: 1/10000)",
    ),
    "liveness_threshold": Field(
        str,
        default="frr_1e-3",
        choices=["frr_1e-2", "frr_1e-3", "frr_1e-4"],
        help="video_note, baidu: which of the thresholds Baidu returns with each liveness score must be reached "
        "(frr_1e-4 lenient 0.05, frr_1e-3 0.3, frr_1e-2 strict 0.9)",
    ),
    "min_person_score": Field(
        float,
        default=80,
        min=0,
        max=100,
        help="video_note, baidu: person verify score (best frame against the ID photo) at least this (Baidu: 80)",
    ),
    "code_minutes": Field(
        float, default=5, min=1, max=30, help="video_note: a code is valid this long (Baidu's session: at most 5)"
    ),
    "max_note_seconds": Field(
        float, default=30, min=3, max=60, help="video_note: longer notes are refused (Telegram allows 60 s)"
    ),
    "max_failures": Field(
        int, default=3, min=1, max=20, help="video_note: failed notes before a cool-down (each try: a new code)"
    ),
    "cooldown_minutes": Field(float, default=60, min=1, help="video_note: how long the cool-down lasts"),
    "gate_chats": Field(
        list,
        default=[],
        item=Field(int),
        help="verified-only groups: join requests there are approved once the user passed /verify (the bot must be "
        "an admin that may invite users)",
    ),
    "gate_minutes": Field(
        float, default=15, min=1, max=1440, help="a join request whose user has not passed by then is declined"
    ),
    "retention_days": Field(
        float, default=30, min=0, help="finished and expired sessions are deleted after this many days"
    ),
}


class Plugin:
    """The realname plugin of one bot: its :class:`Verifier` (with the provider) lives on the instance."""

    def __init__(self) -> None:
        self.verifier: Verifier | None = None

    @hookimpl
    def aipbot_config_schema(self) -> dict[str, Field]:
        """See :data:`SCHEMA`."""
        return SCHEMA

    @hookimpl
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        """The plugin's catalogue (``locale/en.yaml``, ``locale/zh.yaml``)."""
        return load_dir(Path(__file__).parent / "locale")

    @hookimpl
    def aipbot_configure(self, config: dict[str, Any], services: Services) -> None:
        """The verifier of this bot (its provider and its sessions table), from the validated section."""
        if config["method"] == "video_note":
            if config["provider"] not in ("tencent", "baidu"):
                raise ConfigError("plugins.realname.provider", "method video_note needs provider tencent or baidu")
        elif config["provider"] == "tencent":
            raise ConfigError("plugins.realname.provider", "tencent works with method: video_note (H5: webank)")
        elif config["provider"] == "baidu" and not config["plan_id"]:
            raise ConfigError("plugins.realname.plan_id", "is required")
        self.verifier = Verifier(config, services)

    @hookimpl
    def aipbot_commands(self) -> list[Command]:
        """``/verify``, ``/forget`` and the admins' ``/verifystat``."""
        return self.verifier.commands() if self.verifier is not None else []

    @hookimpl
    def aipbot_web_routes(self) -> list[Any]:
        """``GET /verify/return/{ref}``: the page the provider sends the browser back to (see pages.py)."""
        from starlette.routing import Route

        return [Route(RETURN_PATH, ReturnPage(self).endpoint, methods=["GET"])]

    @hookimpl
    def aipbot_status(self) -> str:
        """The provider, its plan and the pass rule, or that the provider is not configured."""
        return self.verifier.describe() if self.verifier is not None else ""

    @hookimpl
    def aipbot_startup(self, config: dict[str, Any], services: Services) -> None:
        """Schedule the polling job (it also expires abandoned sessions and applies the retention)."""
        if self.verifier is not None:
            services.every(config["poll_seconds"], self.verifier.poll, name="realname-poll")
            sessions = self.verifier.sessions
            services.metrics.gauge(
                "aipbot_verification_sessions",
                "Verification sessions in the database, by state",
                lambda: services.run_db(sessions.counts),
                labels=("state",),
            )

    @hookimpl
    def aipbot_shutdown(self) -> None:
        """Let go of the verifier and its provider (the job is cancelled with the services)."""
        if self.verifier is not None:
            self.verifier.close()
            self.verifier = None
