"""Who holds an outbox lease, whether it is still alive, and taking over the leases of a sender that died.

An outbox row being sent carries ``lease`` (until when) and ``owner`` (:func:`owner_id`: ``host:pid:random``). A
sender killed mid-send leaves its lease behind; :meth:`Leases.take_over` hands such rows back to the queue (lease
cleared) so the next pass of any sender sends them at once instead of after :data:`core.sending.outbox.LEASE`.

How an owner is known to be alive:

- **one process** (``shared`` false: no ``cluster.redis_url``, so nobody else sends from this database): only this
  process is; at start every lease not ours is taken over;
- **cluster mode** (``shared``): an owner is alive while its heartbeat key ``outbox:owner:<owner>`` is in the shared
  state (Redis). Each outbox sets its key every :data:`HEARTBEAT` seconds with a time to live of :data:`BEAT_TTL`,
  so a process killed with ``kill -9`` is known dead at most :data:`BEAT_TTL` seconds later; an owner on this host
  (same host name) whose pid no longer runs, or is this very process under another random part (a restart that got
  the same pid, as a container's pid 1 does), is dead at once. A live owner's lease is left alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from sqlalchemy import Connection, Table, select, update

from core.infra import keys

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a sender (cluster mode), and between two looks for dead senders' leases.
HEARTBEAT = 2.0
#: Seconds a heartbeat counts for: three beats missed and the owner is dead.
BEAT_TTL = 3 * HEARTBEAT


_RUN = secrets.token_hex(4)


def owner_id() -> str:
    """``host:pid:random`` — this process, and this run of it (one value for every outbox of the process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_RUN}"


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def dead_here(owner: str, me: str) -> bool:
    """Whether ``owner`` is a process of this host that is certainly gone: its pid does not run, or it is this
    process's pid under another run's random part."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != me.partition(":")[0] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != me
    return not _pid_runs(pid)


class Leases:
    """The lease bookkeeping of one :class:`core.sending.outbox.Outbox` (see the module docstring)."""

    def __init__(self, outbox: Any, table: Table, *, queued: str, shared: bool) -> None:
        """``table``: the outbox's table; ``queued``: its state of a message not yet delivered."""
        self.outbox = outbox
        self.table = table
        self.queued = queued
        self.shared = shared
        self.owner = owner_id()
        #: How often the background sender must call :meth:`beat` (one process: never; all is done at start).
        self.every = HEARTBEAT if shared else float("inf")
        self._looked = float("-inf")
        self._beaten = float("-inf")

    def _key(self, owner: str) -> str:
        return keys.outbox_owner(owner)

    async def beat(self) -> None:
        """Refresh this sender's heartbeat (cluster mode) and, every :data:`HEARTBEAT` seconds, take over the leases
        of senders that died."""
        now = self.outbox.clock()
        if not self.shared or now - self._looked < self.every:
            return
        self._looked = now
        await self.alive()
        await self.take_over()

    async def alive(self) -> None:
        """Refresh this sender's heartbeat if it is due (cluster mode): before it leases anything, so no other
        process ever sees a lease of a live sender without its heartbeat."""
        now = self.outbox.clock()
        if self.shared and now - self._beaten >= self.every:
            self._beaten = now
            await self.outbox.services.state.set(self._key(self.owner), 1, BEAT_TTL)

    async def end(self) -> None:
        """At a clean stop: the heartbeat goes at once (this sender's leases were released)."""
        if self.shared:
            await self.outbox.services.state.delete(self._key(self.owner))

    async def mark_sending(self, key: str) -> None:
        """Note that a try of ``key`` begins: should this process die before the outcome, the replacement knows the
        message may have reached Telegram."""
        table, now = self.table, self.outbox.clock()
        stmt = update(table).where(table.c.key == key).values(sending=now)
        await self.outbox._db(lambda db: db.execute(stmt))

    async def take_over(self, *, at_start: bool = False) -> int:
        """Clear the leases held by senders that are not alive (see the module docstring); how many."""
        c, now = self.table.c, self.outbox.clock()
        held = (c.state == self.queued) & (c.lease >= now)

        def owners(db: Connection) -> list[str | None]:
            return [row[0] for row in db.execute(select(c.owner).where(held).distinct()).fetchall()]

        found = await self.outbox._db(owners)
        dead: list[str | None] = []
        for owner in found:
            if owner == self.owner:
                continue
            if not self.shared:
                if at_start:  # one process: whatever another run leased is that dead run's
                    dead.append(owner)
                continue
            if owner is None:
                continue  # a lease from before owners were recorded: it lapses by itself
            if dead_here(owner, self.owner) or await self.outbox.services.state.get(self._key(owner)) is None:
                dead.append(owner)
        if not dead:
            return 0
        named = [o for o in dead if o is not None]
        whose = c.owner.in_(named) if named else None
        if None in dead:
            whose = c.owner.is_(None) if whose is None else (whose | c.owner.is_(None))

        def release(db: Connection) -> int:
            return int(db.execute(update(self.table).where(held, whose).values(lease=0.0, owner=None)).rowcount)

        count = await self.outbox._db(release)
        if count:
            log.info("outbox: took over %d messages whose sender died (%s)", count, ", ".join(map(str, dead)))
        return count
