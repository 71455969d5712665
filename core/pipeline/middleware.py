"""What every update passes before a plugin sees it, and after a plugin fails: access control, daily
quotas, and alerts to the admins about problems only they can fix."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

from core.contract.chat import Command, Context, Reply, Services, User
from core.contract.errors import ProviderError, ProviderMisconfigured, QuotaExhausted, UserFacingError
from core.infra import keys

log = logging.getLogger(__name__)

ADMIN_ALERTS = (ProviderMisconfigured, QuotaExhausted)  # errors only an admin can fix: the admins are told
ALERT_EVERY = 3600.0  # seconds between two alerts about the same problem


class Access:
    """``access.allowed_users`` and admin-only commands."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.allowed_users = config["access"]["allowed_users"]

    def allowed(self, user: User) -> bool:
        return user.is_admin or not self.allowed_users or user.id in self.allowed_users

    @staticmethod
    def may_run(command: Command, user: User) -> bool:
        return not command.admin_only or user.is_admin


class Quotas:
    """``access.daily_quota``: uses per user per calendar day (server local time), counted in the store."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limits: dict[str, int] = services.config["access"]["daily_quota"]

    async def within(self, command: Command, user: User, *, consume: bool, key: str | None = None) -> bool:
        """Whether ``user`` may run ``command`` today; with ``consume``, count this use — once per ``key``
        (what arrived: a replayed update that was already counted is not counted again)."""
        limit = self.limits.get(command.name)
        if limit is None or user.is_admin:
            return True
        store, day = self.services.store, dt.date.today().isoformat()
        if not consume:
            return await self.services.run_db(store.quota_used, user.id, command.name, day) < limit
        mark = keys.quota(key, command.name)
        if key is not None:  # this update was judged before a restart: the same answer, nothing counted again
            earlier = await self.services.state.get(mark)
            if earlier is not None:
                return bool(earlier)
        allowed: bool = await self.services.run_db(store.use_quota, user.id, command.name, day, limit)
        if key is not None:
            await self.services.state.set(mark, allowed, 2 * 86400)
        return allowed

    def refusal(self, command: Command, user: User) -> str:
        limit = self.limits[command.name]
        return self.services.catalogue.text(user.language, "quota.exhausted", command=f"/{command.name}", limit=limit)


class AdminAlerts:
    """Tells the admins, in private and at most once an hour per problem, what only they can fix.

    The "already told" marks live in the state store, so every process of one bot shares them. Alerts go
    through the outbox: stored first, retried until Telegram accepts them (also after a restart).
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.admins: list[int] = services.config["access"]["admins"]

    async def maybe_alert(self, ctx: Context, err: UserFacingError) -> None:
        if not isinstance(err, ADMIN_ALERTS):
            return
        code = err.code if isinstance(err, ProviderError) else None  # its detail carries a per-request log id
        problem = f"{err.vendor} code {code}" if code is not None else err.detail
        now = self.services.state.clock()
        if not await self.services.state.add(keys.alerted(type(err).__name__, problem), now, ALERT_EVERY):
            return
        lang = self.services.config["language"]["default"]
        text = self.services.catalogue.text(lang, "admin.alert", command=ctx.command.name, detail=err.detail)
        digest = hashlib.sha256(f"{type(err).__name__}:{problem}".encode()).hexdigest()[:16]
        for admin in self.admins:  # an admin who never opened a chat with the bot: given up, logged
            await self.services.outbox.put(admin, Reply(text), key=keys.join("alert", digest, int(now), admin))
