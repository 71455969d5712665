"""What the polling job and the return page need of the verifier, so that neither imports the module that
holds it (:mod:`plugins.realname.flow` imports the job; the plugin object imports the page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from core.contract.chat import Services
from plugins.realname.providers import RealnameProvider
from plugins.realname.rules import Result
from plugins.realname.sessions import Session, SessionStore


class Settles(Protocol):
    """A verifier (:class:`plugins.realname.flow.Verifier`) as the job and the return page use it."""

    config: dict[str, Any]
    services: Services
    sessions: SessionStore
    clock: Callable[[], float]

    def provider(self) -> RealnameProvider: ...

    def outcome(self, lang: str, session: Session, result: Result | None) -> str: ...

    async def settle(
        self, session: Session, callback_code: str | None = None, *, answered: bool = False
    ) -> tuple[str, Result | None, bool]: ...


class HoldsVerifier(Protocol):
    """The plugin object (:class:`plugins.realname.Plugin`): its verifier exists once the bot is assembled."""

    @property
    def verifier(self) -> Settles | None: ...
