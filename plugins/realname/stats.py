"""``/verifystat``: the admins' view of sessions and of the provider's statistics, without anything personal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.contract.chat import Context
from plugins.realname.providers import RealnameProvider
from plugins.realname.sessions import SessionStore, looks_like_id

#: Keys never shown from the provider's statistics (defence in depth: they hold counts only).
PERSONAL_KEYS = ("name", "idcard", "id_card", "id_no", "number", "image", "base64", "photo", "video", "url")


async def verifystat(ctx: Context, sessions: SessionStore, provider: Callable[[], RealnameProvider]) -> None:
    """``/verifystat [session id]`` (admins, private chat): the provider's statistics, or recent sessions."""
    if not ctx.chat.is_private:
        await ctx.reply(ctx.t("realname.stat_private"))
        return
    if not ctx.args:
        recent = await ctx.run_db(sessions.recent, 10)
        lines = [ctx.t("realname.stat_usage")]
        lines += [f"{s.id} · {s.state} · user {s.user_id} · {_utc(s.created_at)}" for s in recent]
        if not recent:
            lines.append(ctx.t("realname.stat_none"))
        await ctx.reply("\n".join(lines))
        return
    session_id = ctx.args[0]
    session = await ctx.run_db(sessions.get, session_id) if looks_like_id(session_id) else None
    if session is None:
        await ctx.reply(ctx.t("realname.stat_unknown"))
        return
    stats = await ctx.run_blocking(provider().stats, session.reference)
    lines = [
        ctx.t(
            "realname.stat_title",
            session=session.id,
            state=session.state,
            user_id=session.user_id,
            created=_utc(session.created_at),
        )
    ]
    lines += _flatten(stats) or [ctx.t("realname.stat_empty")]
    await ctx.reply("\n".join(lines))


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _flatten(value: Any, prefix: str = "") -> list[str]:
    """``key: value`` lines of a nested answer, without anything that could identify a person."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if any(word in str(key).lower() for word in PERSONAL_KEYS):
                continue
            lines += _flatten(item, f"{prefix}{key}" if not prefix else f"{prefix} › {key}")
    elif isinstance(value, list):
        for i, item in enumerate(value[:50]):
            lines += _flatten(item, f"{prefix}[{i}]")
    elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 64):
        lines.append(f"{prefix}: {value}" if prefix else str(value))
    return lines[:100]
