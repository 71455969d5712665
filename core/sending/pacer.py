"""The pacer: python-telegram-bot's rate limiter for every Bot API request but ``getUpdates``.

:class:`SendLimiter` is a ``telegram.ext.BaseRateLimiter`` and does what that contract allows, no more: it decides
*when* a request goes, and rides ``429 Too Many Requests`` (``RetryAfter``: that chat waits out the
``retry_after`` Telegram asked for and the request is made again; the other chats go on). Every other error
passes through untouched, to :mod:`core.sending.sender`, which owns the retries of transient failures.

*When*: :class:`Pacer` keeps buckets like Telegram's (all chats, each chat with a short burst, each group per
minute; :mod:`core.infra.rates`' one bucket implementation), so a burst of replies queues instead of drawing
429s. In cluster mode (``shared``) a request also reserves the same budgets in Redis, so every process sending
with one bot token stays within that token's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from telegram.error import RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter

from core.infra.rates import Bucket, Budget, LocalBudgets
from core.sending.rules import EDIT_METHODS, MESSAGE_METHODS, error_code, is_group, retry_after, why

if TYPE_CHECKING:
    from core.infra.metrics import Metrics
    from core.infra.shared import SharedRedis

log = logging.getLogger(__name__)

#: The pacer keeps this share of each configured rate, and a reserve of MARGIN seconds' worth of tokens in
#: each bucket: requests released the moment a bucket allows reach Telegram with a few milliseconds more or
#: less of latency each, and Telegram's buckets count arrivals (bench/delivery_bench.py: with the rate
#: headroom alone, right after a burst a 429 now and then).
HEADROOM = 0.98
MARGIN = 0.1
#: Past this many chats paused by a 429, the pauses that are over are forgotten.
MAX_PAUSES = 4096


class Pacer:
    """Lets requests go when every bucket they need (their chat's, their group's, the overall one) has room,
    and accounts for them in all of those at that same instant: a request waiting for the overall rate has not
    spent its chat's turn yet, so Telegram sees the spacing the buckets allowed. Waiting requests go in the
    order they came, except that one whose chat is not ready does not hold up the others."""

    def __init__(self, overall: float, per_chat: float, chat_burst: int, per_group: float, headroom: float) -> None:
        self.overall_rate = overall * headroom
        self.overall_burst = max(1.0, overall)
        self.chat_rate = per_chat * headroom
        self.chat_burst = chat_burst
        self.group_rate = per_group / 60 * headroom
        self._buckets = LocalBudgets()
        self._paused: dict[Any, float] = {}  # chat -> loop time until which Telegram asked us to wait
        self._waiting: list[tuple[list[Bucket], Any, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def budgets(self, method: str, chat: Any) -> list[Budget]:
        """The budgets a request takes a turn in (none for methods Telegram's send limits ignore), named as
        in Redis for cluster mode; each burst less a reserve of :data:`MARGIN` seconds' worth."""
        if method not in MESSAGE_METHODS and method not in EDIT_METHODS:
            return []
        budgets: list[Budget] = []

        def budget(name: str, rate: float, burst: float) -> None:
            budgets.append(Budget(f"telegram:{name}", rate, max(1.0, burst - rate * MARGIN)))

        if chat is not None and method in MESSAGE_METHODS:  # edits take no chat or group turn
            if self.chat_rate:
                budget(f"chat:{chat}", self.chat_rate, self.chat_burst)
            if self.group_rate and is_group(chat):
                budget(f"group:{chat}", self.group_rate, 20)
        if self.overall_rate:
            budget("all", self.overall_rate, self.overall_burst)
        return budgets

    def pause(self, chat: Any, seconds: float) -> None:
        """Telegram asked to wait ``seconds`` before sending to ``chat`` again (messages and edits)."""
        now = asyncio.get_running_loop().time()
        if len(self._paused) >= MAX_PAUSES:
            self._paused = {c: until for c, until in self._paused.items() if until > now}
        self._paused[chat] = max(self._paused.get(chat, 0.0), now + seconds)

    def _wait(self, buckets: list[Bucket], chat: Any, now: float) -> float:
        pause = self._paused.get(chat, 0.0) - now if chat is not None else 0.0
        return max([0.0, pause, *(b.wait(now) for b in buckets)])

    async def turn(self, method: str, chat: Any) -> None:
        """Wait until ``method`` to ``chat`` may go now (and account for it)."""
        if method not in MESSAGE_METHODS and method not in EDIT_METHODS:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        buckets = [self._buckets.bucket(b, now) for b in self.budgets(method, chat)]
        if not self._waiting and self._wait(buckets, chat, now) == 0:
            for bucket in buckets:
                bucket.take(now)
            return
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((buckets, chat, future))
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._dispatch(), name="aipbot-send-pacer")
        await future

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while self._waiting:
            now, soonest, still = loop.time(), float("inf"), []
            for buckets, chat, future in self._waiting:
                if future.done():  # the caller was cancelled
                    continue
                wait = self._wait(buckets, chat, now)
                if wait == 0:
                    for bucket in buckets:
                        bucket.take(now)
                    future.set_result(None)
                else:
                    soonest = min(soonest, wait)
                    still.append((buckets, chat, future))
            self._waiting = still
            if still:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), soonest)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting = []


class SendLimiter(BaseRateLimiter[int]):
    """Pacing and 429s for every Bot API request (``rate_limit_args``: attempts for that request in all, so ``1``
    means a 429 is not ridden — PTB drops a falsy ``rate_limit_args``, so 0 cannot mean "no retries").

    ``metrics`` (:class:`core.infra.metrics.Metrics`) counts each attempt: a message sent or edited, or a Bot
    API error by code (counted, then raised as it came). ``shared`` (cluster mode): the rates are the whole
    cluster's, reserved in Redis; while Redis cannot be reached, this process's pacing alone applies.

    Why our own ``BaseRateLimiter`` and not PTB's ``AIORateLimiter(max_retries=...)``: that one halts *every*
    request for a 429 in one chat, has no per-chat limit for private chats, and takes its limiters' capacity
    one after the other (aiolimiter has no way to take two at once), so a request that waited for the overall
    rate arrives later than its chat's limiter accounted for and the chat's next message can arrive too soon
    (measured with aiolimiter buckets in that order: a 429 in 200 replies). :class:`Pacer` takes all at once.
    """

    def __init__(
        self,
        *,
        retries: int = 5,
        max_wait: float = 60.0,
        overall: float = 30.0,
        per_chat: float = 1.0,
        chat_burst: int = 3,
        per_group: float = 20.0,
        headroom: float = HEADROOM,
        metrics: Metrics | None = None,
        shared: SharedRedis | None = None,
    ) -> None:
        self.retries = retries
        self.max_wait = max_wait
        self.pacer = Pacer(overall, per_chat, chat_burst, per_group, headroom)
        self.metrics = metrics
        self.shared = shared

    @classmethod
    def from_config(
        cls, telegram: dict[str, Any], *, metrics: Metrics | None = None, shared: SharedRedis | None = None
    ) -> SendLimiter:
        """The limiter the ``telegram:`` config section describes."""
        return cls(
            retries=telegram["send_retries"],
            max_wait=telegram["send_max_wait"],
            overall=telegram["rate_overall"],
            per_chat=telegram["rate_per_chat"],
            chat_burst=telegram["chat_burst"],
            per_group=telegram["rate_per_group"],
            metrics=metrics,
            shared=shared,
        )

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Let go of requests still waiting for their turn."""
        await self.pacer.close()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Send one request within the rate limits; after a 429, wait the ``retry_after`` and send it again
        (at most ``retries`` times, and never for a wait over ``max_wait``). Any other error is raised as is."""
        retries = self.retries if rate_limit_args is None else max(0, rate_limit_args - 1)
        method = endpoint.lower()
        chat = data.get("chat_id")
        attempt = 0
        while True:
            await self.pacer.turn(method, chat)
            if self.shared is not None:
                await self._cluster_turn(method, chat)
            try:
                return await self._counted(endpoint, callback, args, kwargs)
            except RetryAfter as err:
                failure, wait = err, retry_after(err)
                if chat is not None and wait <= self.max_wait:  # also when giving up: the next must not draw one
                    self.pacer.pause(chat, wait)
                if wait > self.max_wait or attempt >= retries:
                    log.warning("%s to chat %s failed after %d attempts: %s", endpoint, chat, attempt + 1, why(err))
                    raise
            attempt += 1
            log.info(
                "%s to chat %s failed (%s); retry %d of %d in %.1f s",
                endpoint,
                chat,
                why(failure),
                attempt,
                retries,
                wait,
            )
            await asyncio.sleep(wait)

    async def _cluster_turn(self, method: str, chat: Any) -> None:
        """Wait for the cluster's turn too: one bot token is one set of Telegram limits for every process."""
        budgets = self.pacer.budgets(method, chat)
        if not budgets or self.shared is None:
            return
        try:
            wait = await asyncio.to_thread(self.shared.budgets.reserve, budgets)
        except RedisError as err:
            log.warning("send rates: Redis unavailable (%s), pacing this process's messages only", type(err).__name__)
            return
        if wait > 0:
            await asyncio.sleep(wait)

    async def _counted(
        self, endpoint: str, callback: Callable[..., Coroutine[Any, Any, Any]], args: Any, kwargs: Any
    ) -> Any:
        """One attempt, counted in the metrics: a message sent or edited, or a Bot API error by code."""
        try:
            result = await callback(*args, **kwargs)
        except TelegramError as err:
            if self.metrics is not None:
                self.metrics.telegram_error(error_code(err))
            raise
        if self.metrics is not None and endpoint.lower().startswith(("send", "edit")) and endpoint != "sendChatAction":
            self.metrics.reply_sent(endpoint)
        return result
