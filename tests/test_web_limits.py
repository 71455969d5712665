"""The web server against slow, idle and greedy clients, over real TCP on 127.0.0.1: connections that send nothing, or
their headers a byte at a time (slowloris), or stay open after a response are closed within the configured timeouts,
at most ``max_connections`` are open, and ``/healthz`` keeps answering meanwhile. Every loop here is bounded (a few
dozen sockets, a few seconds) and talks to this machine only.

Also: no redirect is built from the ``Host`` header, and the access log holds no reference from a path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.responses import PlainTextResponse
from starlette.routing import Route

from core.contract.hookspecs import hookimpl
from tests.test_web import get, web  # noqa: F401 (the fixture)

#: Short limits, so the test waits seconds, not the defaults' 10 s.
LIMITS = {"read_timeout": 1.5, "keep_alive": 0.5, "max_connections": 30}
#: Slack on top of a timeout before a connection still open counts as a failure (a loaded machine).
SLACK = 2.0


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_after(reader: asyncio.StreamReader, started: float, limit: float) -> float:
    """Seconds from ``started`` until the server closed the connection (reading whatever it sent first)."""
    while True:
        try:
            data = await asyncio.wait_for(reader.read(65536), max(0.1, started + limit - time.monotonic()))
        except ConnectionResetError:  # closed with bytes of ours unread: a reset, closed all the same
            data = b""
        if not data:
            return time.monotonic() - started


async def healthy(base: str, times: int, every: float) -> list[int]:
    """``/healthz`` asked ``times`` times, every ``every`` seconds, each on a new connection: the statuses."""
    statuses = []
    for _ in range(times):
        statuses.append((await get(base + "/healthz")).status_code)
        await asyncio.sleep(every)
    return statuses


async def test_idle_connections_are_closed_within_read_timeout_while_healthz_answers(web):  # noqa: F811
    transport, base = await web(server=LIMITS)
    port = transport.app.web.port
    started = time.monotonic()
    sockets = [await connect(port) for _ in range(20)]  # connected, never a byte
    probes = asyncio.ensure_future(healthy(base, 5, 0.3))
    waits = await asyncio.gather(*(closed_after(r, started, LIMITS["read_timeout"] + SLACK) for r, _ in sockets))
    assert await probes == [200] * 5
    assert all(LIMITS["read_timeout"] - 0.2 <= w <= LIMITS["read_timeout"] + SLACK for w in waits), waits
    for _, writer in sockets:
        writer.close()


async def test_slowloris_connections_are_closed_within_read_timeout_while_healthz_answers(web):  # noqa: F811
    transport, base = await web(server=LIMITS)
    port = transport.app.web.port
    started = time.monotonic()
    sockets = [await connect(port) for _ in range(20)]

    async def dribble(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(40):  # one header byte every 0.2 s: would take 8 s, the deadline is 1.5 s
            await asyncio.sleep(0.2)
            if writer.is_closing():
                return
            try:
                writer.write(b"X" if i % 2 else b"-")
                await writer.drain()
            except (ConnectionError, RuntimeError):
                return

    senders = [asyncio.ensure_future(dribble(w)) for _, w in sockets]
    probes = asyncio.ensure_future(healthy(base, 5, 0.3))
    waits = await asyncio.gather(*(closed_after(r, started, LIMITS["read_timeout"] + SLACK) for r, _ in sockets))
    assert await probes == [200] * 5
    assert all(w <= LIMITS["read_timeout"] + SLACK for w in waits), waits
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    for _, writer in sockets:
        writer.close()


async def test_a_kept_alive_connection_is_closed_keep_alive_seconds_after_its_response(web):  # noqa: F811
    transport, _ = await web(server=LIMITS)
    reader, writer = await connect(transport.app.web.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    waited = await closed_after(reader, answered, LIMITS["keep_alive"] + SLACK)
    assert waited < LIMITS["read_timeout"], waited  # the keep-alive limit, not the read deadline
    writer.close()


async def test_at_most_max_connections_are_open_and_the_newest_client_still_gets_an_answer(web):  # noqa: F811
    transport, base = await web(server={**LIMITS, "read_timeout": 30})  # the cap, not the deadline, closes them
    port = transport.app.web.port
    server = transport.app.web._server
    sockets = [await connect(port) for _ in range(60)]  # twice the cap, all idle
    await asyncio.sleep(0.3)
    assert len(server.server_state.connections) <= LIMITS["max_connections"]
    assert await healthy(base, 3, 0.1) == [200] * 3  # a new connection closes the one idle longest
    first = sockets[0][0]
    assert await asyncio.wait_for(first.read(10), 5) == b""  # the oldest idle ones went first
    for _, writer in sockets:
        writer.close()


async def test_a_trailing_slash_is_not_redirected_to_the_host_header(web):  # noqa: F811
    _, base = await web()
    answer = await get(base + "/healthz/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers


class RefPlugin:
    @hookimpl
    def aipbot_web_routes(self, config, services):
        return [Route("/verify/return/{ref}", self.page)]

    async def page(self, request):
        return PlainTextResponse("ok\n")


async def test_the_access_log_shows_the_route_not_the_reference_in_the_path(web, caplog):  # noqa: F811
    _, base = await web(extra_plugins={"refs": RefPlugin()}, plugins={"refs": {}})
    caplog.set_level(logging.DEBUG, logger="aipbot.web.access")
    ref = "Q2hhbmdlIG1lIHBsZWFzZSAxMjM0NTY3"
    assert (await get(f"{base}/verify/return/{ref}")).status_code == 200
    assert (await get(f"{base}/verify/return/{ref}/")).status_code == 404  # no route: long segments masked
    lines = [r.getMessage() for r in caplog.records if r.name == "aipbot.web.access"]
    assert any(line.startswith("GET /verify/return/{ref} 200 ") for line in lines), lines
    assert any(line.startswith("GET /verify/return/…/ 404 ") for line in lines), lines
    assert ref not in caplog.text
