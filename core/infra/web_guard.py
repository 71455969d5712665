"""What uvicorn does not bound by itself: how long a client may take to send a request, and how many connections
it may hold open. A small subclass of uvicorn's h11 protocol, used by :mod:`core.infra.web`.

uvicorn closes a keep-alive connection left idle after a response (``timeout_keep_alive``, the ``server.keep_alive``
setting) and caps the size of a request's head (``h11_max_incomplete_event_size``, ``server.max_header_kb``), but:

- a connection that never sends a byte has no timer at all, and any byte cancels the keep-alive timer, so a client
  sending its headers one byte at a time ("slowloris") holds a connection for ever;
- ``limit_concurrency`` does not refuse connections: it answers ``503`` to every request — health probes included —
  once that many connections are open, which idle connections alone can bring about.

So, per connection: **the whole request** — request line, headers and body — must arrive within
``server.read_timeout`` seconds of the connection opening, or of the previous response on a kept-alive connection;
else the connection is closed. Handling time is not bounded here (the request is complete by then). And at most
``server.max_connections`` connections are open: one more closes the connection idle longest (no request in
progress), or, when every connection is busy with a request, is itself closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("core.infra.web")

#: The client-side states in which a connection waits for (the rest of) a request.
_READING = (h11.IDLE, h11.SEND_BODY)


def guarded_protocol(read_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a read deadline per request and a cap on open connections (module docstring)."""

    class Guarded(_GuardedProtocol):
        pass

    Guarded.read_timeout = read_timeout
    Guarded.max_connections = max_connections
    return Guarded


class _GuardedProtocol(H11Protocol):
    read_timeout: float = 10.0
    max_connections: int = 200

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_timer: asyncio.TimerHandle | None = None
        self._idle_since = time.monotonic()
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        self._arm()  # the next request on this connection has read_timeout seconds, like the first
        super().on_response_complete()
        self._check()

    # -- the read deadline ------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        timer = getattr(self, "_read_timer", None)
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _check(self) -> None:
        """The request is complete (or the connection is done): the deadline no longer applies."""
        if self.conn.their_state not in _READING:
            self._disarm()

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.conn.their_state in _READING and not self.transport.is_closing():
            log.debug(
                "web: closed a connection from %s: no complete request within %g s", self._peer(), self.read_timeout
            )
            self.transport.close()

    # -- the connection cap -----------------------------------------------------------------------------------------
    def _busy(self) -> bool:
        """Whether a request is in progress (received, being answered)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> None:
        idle = [c for c in self.connections if c is not self and isinstance(c, _GuardedProtocol) and not c._busy()]
        if idle:
            victim = min(idle, key=lambda c: c._idle_since)
            log.debug("web: %d connections open: closed the one idle longest", len(self.connections))
            victim.transport.close()
            return
        log.warning(
            "web: %d connections open, all busy: a new one is refused (server.max_connections)", len(self.connections)
        )
        self.transport.close()

    def _peer(self) -> Any:
        return self.client[0] if self.client else "-"
