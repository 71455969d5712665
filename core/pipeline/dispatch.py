"""The dispatcher port: who handles a journaled update, and when.

The intake (:mod:`core.pipeline.intake`) journals an update, then hands it to its :class:`Dispatcher`. Two
implementations keep one promise — a chat's updates are handled one after another, in ``update_id`` order,
different chats concurrently, and the parts of an album as one batch:

- :class:`LocalDispatcher` (one process): a queue per chat in this process, fed from memory; what a previous run
  left unfinished is replayed from the journal at start (``replays``);
- :class:`core.pipeline.cluster.CeleryDispatcher` (cluster mode): a front end sends one Celery task per chat, a
  worker takes the chat's lock and drains the chat's open journal entries; nothing is replayed at start, a sweep
  finds what was left.

Both use one album rule on one clock (:func:`album_left`): the wall-clock time each part was journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.pipeline.journal import Entry

log = logging.getLogger(__name__)

#: Handle one batch (an update, or the parts of one album) and mark it done: the intake's ``process``.
Process = Callable[[list["Entry"]], Awaitable[None]]


def album_left(received: list[float], now: float, wait: float, max_wait: float) -> float:
    """Seconds until an album whose parts were journaled at ``received`` (wall clock) is complete: ``wait`` after
    its newest part, at most ``max_wait`` after its first; <= 0 when it is complete now. A message of the chat that
    follows the album completes it at once (the callers check that)."""
    return min(max(received) + wait, min(received) + max(wait, max_wait)) - now


class Dispatcher(Protocol):
    """Where the intake sends what it journaled."""

    #: Whether the intake replays the journal's unfinished entries through :meth:`dispatch` at start.
    replays: bool

    async def start(self, process: Process) -> None:
        """Begin; ``process(batch)`` handles a batch and marks it done."""

    async def dispatch(self, entry: Entry) -> None:
        """A journaled update to handle (its ``body`` the full update as received, or the journal's form on a
        replay)."""

    async def stop(self, timeout: float) -> None:
        """Finish what is being handled, for at most ``timeout`` seconds; the rest stays in the journal."""


class _Queue:
    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class LocalDispatcher:
    """Per-chat queues in this process (grammY's ``sequentialize``); albums collected in the chat's queue."""

    replays = True

    def __init__(self, album_wait: float, album_max_wait: float, clock: Callable[[], float] = time.time) -> None:
        self.album_wait = album_wait
        self.album_max_wait = max(album_wait, album_max_wait)
        self.clock = clock
        self._queues: dict[str, _Queue] = {}
        self._process: Process | None = None
        self._stopping = False

    async def start(self, process: Process) -> None:
        self._process = process

    async def dispatch(self, entry: Entry) -> None:
        queue = self._queues.get(entry.chat)
        if queue is None:
            queue = self._queues[entry.chat] = _Queue()
            queue.task = asyncio.get_running_loop().create_task(self._work(entry.chat, queue))
        queue.entries.append(entry)
        queue.wake.set()

    async def _work(self, chat: str, queue: _Queue) -> None:
        """Handle the chat's updates one after another until its queue is empty."""
        assert self._process is not None, "dispatch before start"
        try:
            while queue.entries:
                batch = [queue.entries.popleft()]
                if batch[0].group is not None:
                    await self._collect_album(queue, batch)
                await self._process(batch)
        finally:
            if self._queues.get(chat) is queue:
                del self._queues[chat]

    async def _collect_album(self, queue: _Queue, batch: list[Entry]) -> None:
        """Add the album's further parts as they arrive, until :func:`album_left` says it is complete, or another
        message of the chat comes first."""
        group = batch[0].group
        while True:
            while queue.entries and queue.entries[0].group == group:
                batch.append(queue.entries.popleft())
            if queue.entries or self._stopping:
                return
            left = album_left([e.received for e in batch], self.clock(), self.album_wait, self.album_max_wait)
            if left <= 0:
                return
            queue.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(queue.wake.wait(), left)

    async def stop(self, timeout: float) -> None:
        """Albums being collected are handled now; chats still busy after ``timeout`` are cancelled (replayed at
        the next start)."""
        self._stopping = True
        for queue in list(self._queues.values()):
            queue.wake.set()
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning("intake: %d chats still busy at shutdown; replayed at the next start", len(pending))
