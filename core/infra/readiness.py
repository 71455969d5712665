"""``/readyz``'s checks: named asynchronous checks, each with its timeout and how long its outcome is reused."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("core.infra.web")

#: ``await check()`` returns when ready and raises when not.
Check = Callable[[], Awaitable[Any]]
#: Seconds a readiness check may take before it counts as failed.
CHECK_TIMEOUT = 3.0


class _Check:
    """One readiness check: its last outcome is reused for ``cache`` seconds; concurrent askers share one run."""

    def __init__(self, check: Check, cache: float, timeout: float) -> None:
        self.check, self.cache, self.timeout = check, cache, timeout
        self.result: str | None = None
        self.at = 0.0
        self.running: asyncio.Task[str] | None = None

    async def run(self) -> str:
        if self.result is not None and time.monotonic() - self.at < self.cache:
            return self.result
        if self.running is None:
            self.running = asyncio.ensure_future(self._once())
        return await asyncio.shield(self.running)

    async def _once(self) -> str:
        try:
            await asyncio.wait_for(self.check(), self.timeout)
            result = "ok"
        except asyncio.TimeoutError:
            result = "timeout"
        except Exception as exc:
            result = f"error: {type(exc).__name__}"
        self.result, self.at, self.running = result, time.monotonic(), None
        return result


class Readiness:
    """Named asynchronous checks; ready when every one completes without raising within its timeout."""

    def __init__(self) -> None:
        self.checks: dict[str, _Check] = {}
        self._last: dict[str, str] = {}

    def add(self, name: str, check: Check, *, cache: float = 0.0, timeout: float = CHECK_TIMEOUT) -> None:
        """``await check()`` must return (anything) when ``name`` is ready and raise when it is not; its
        outcome is reused for ``cache`` seconds (for checks that cost a network call)."""
        self.checks[name] = _Check(check, cache, timeout)

    async def run(self) -> dict[str, str]:
        """``{name: "ok" | "timeout" | "error: <type>"}`` for every check, run concurrently."""
        names = list(self.checks)
        results = await asyncio.gather(*(self.checks[n].run() for n in names))
        outcome = dict(zip(names, results, strict=True))
        for name, result in outcome.items():  # log changes only: probes ask every few seconds
            if result != self._last.get(name, "ok"):
                (log.info if result == "ok" else log.warning)("readiness: %s is %s", name, result)
        self._last = outcome
        return outcome
