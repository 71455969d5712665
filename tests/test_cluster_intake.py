"""The pieces of cluster mode (core.pipeline.cluster, core.sending.pacer's shared rates) on a real Redis
and one database (a SQLite file, then a real PostgreSQL).

Each "process" here is its own intake (or sender) with its own Redis client; what they share goes through the
real ``redis-server`` and the database, as between processes.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from telegram.ext import ExtBot

from core.contract.i18n import core_catalogue
from core.infra.rates import Budget
from core.infra.shared import SharedRedis
from core.infra.state import RedisState
from core.infra.store import Store
from core.pipeline.cluster import CeleryDispatcher
from core.pipeline.handler import WITHHELD
from core.pipeline.intake import Intake
from core.pipeline.journal import MAX_ATTEMPTS
from core.runtime.config import validate
from core.sending.outbox import Outbox
from core.sending.pacer import SendLimiter
from core.telegram.decode import TelegramCodec


class ClusterIntake:
    """One cluster process's intake and its Celery dispatcher, as ``core.runtime.app.App`` assembles them."""

    def __init__(self, intake: Intake, dispatcher: CeleryDispatcher, front: bool) -> None:
        self.intake, self.dispatcher, self.front = intake, dispatcher, front
        self.services = intake.services

    async def start(self) -> None:
        await self.intake.start(prune=not self.front)

    async def stop(self) -> None:
        await self.intake.stop()

    def __getattr__(self, name: str):
        return getattr(self.intake if hasattr(self.intake, name) else self.dispatcher, name)


class Codec:
    """Telegram's order (chat, album) with a journal form of the test's choosing."""

    key = staticmethod(TelegramCodec.key)

    def __init__(self, scrub) -> None:
        self.scrub = scrub

    async def journal_form(self, update: dict) -> dict:
        return await self.scrub(update) if self.scrub is not None else update


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster(store_target, redis_server):
    """``cluster.intake(front=...)``: an intake of its own process (own store connection, own Redis client)."""
    prefix, made = redis_server.prefix(), []
    clock = Clock()
    handled: list[tuple[str, list[int], dict]] = []
    sent: list[str] = []

    def intake(name: str, *, front: bool = False, scrub=None) -> ClusterIntake:
        pool = ThreadPoolExecutor(1)

        async def run(fn, *args):
            return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

        services = SimpleNamespace(
            config=validate({"telegram": {"token": "123:test-token"}}),
            store=Store(store_target),
            state=RedisState(redis_server.url, prefix=prefix),
            run_db=run,
            run_blocking=run,
            catalogue=core_catalogue(),
            transport=None,
        )
        services.outbox = Outbox(services)  # no background sender: what it would send stays queued, to look at

        async def handle(entries, transport) -> None:
            handled.append((name, [e.update_id for e in entries], entries[0].body))
            await asyncio.sleep(0.05)  # long enough for the other worker to try the chat meanwhile

        made.append((services, pool))
        codec = Codec(scrub)
        dispatcher = CeleryDispatcher(
            services,
            codec,
            send_task=sent.append,
            front=front,
            token="123:test-token",
            album_wait=0.3,
            album_max_wait=2,
            lock_seconds=2,
            sweep_seconds=60,
            clock=clock,
        )
        return ClusterIntake(
            Intake(services, SimpleNamespace(), codec, handle, dispatcher, clock=clock), dispatcher, front
        )

    yield SimpleNamespace(intake=intake, clock=clock, handled=handled, sent=sent, prefix=prefix)
    for services, pool in made:
        services.store.close()
        services.state.close()
        pool.shutdown()


def message(update_id: int, chat: int = 7, text: str = "/ocr", **more) -> dict:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 0, "chat": {"id": chat, "type": "private"}, "text": text, **more},
    }


async def settle(front: ClusterIntake) -> None:
    await asyncio.gather(*front.dispatcher._sending)  # the tasks being sent


async def test_two_workers_on_one_chat_handle_its_updates_once_each_in_arrival_order(cluster):
    front, one, two = cluster.intake("front", front=True), cluster.intake("one"), cluster.intake("two")
    for it in (front, one, two):
        await it.start()
    assert await front.receive([message(i) for i in (1, 2, 3, 4)]) == 4
    await settle(front)
    assert cluster.sent == ["7"] * 4  # one task per update, all for chat 7
    counts = await asyncio.gather(one.drain("7"), two.drain("7"), one.drain("7"), two.drain("7"))
    assert sorted(counts) == [0, 0, 0, 4]  # one holder took the chat; the others found it held and ended
    assert [ids for _, ids, _ in cluster.handled] == [[1], [2], [3], [4]]
    assert await one.drain("7") == 0  # nothing left
    for it in (one, two, front):
        await it.stop()


async def test_a_repeated_update_id_reaching_another_front_end_is_journaled_once(cluster):
    first, second = cluster.intake("a", front=True), cluster.intake("b", front=True)
    await first.start()
    assert await first.receive([message(5)]) == 1
    assert await second.receive([message(5)]) == 0  # Telegram redelivered it to the other front end
    await settle(first)
    assert cluster.sent == ["7"]


async def test_the_parts_of_an_album_reaching_two_front_ends_are_handled_as_one(cluster):
    a, b, worker = cluster.intake("a", front=True), cluster.intake("b", front=True), cluster.intake("w")
    await worker.start()
    part = {"photo": [{"file_id": "x", "file_unique_id": "x", "width": 1, "height": 1}], "media_group_id": "g1"}
    await a.receive([message(10, text="", caption="/ocr", **part)])
    draining = asyncio.create_task(worker.drain("7"))  # the first part's task runs before the second part came
    await asyncio.sleep(0.1)
    await b.receive([message(11, text="", **part)])
    cluster.clock.now += 0.3  # album_wait after the newest part
    assert await draining == 2
    assert [ids for _, ids, _ in cluster.handled] == [[10, 11]]


async def test_a_chat_held_by_a_worker_that_died_is_taken_over_when_its_lock_lapses(cluster):
    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    await worker.services.state.add("lock:chat:7", "a-dead-worker", 0.5)
    await front.receive([message(20)])
    assert await worker.drain("7") == 0  # held
    await asyncio.sleep(0.6)
    assert await worker.drain("7") == 1
    assert cluster.handled[0][1] == [20]


async def test_a_task_finding_its_chat_held_with_updates_open_comes_back_later(cluster):
    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    assert not await worker.held("7")  # nothing open
    await worker.services.state.add("lock:chat:7", "another-worker", 30)
    assert not await worker.held("7")  # held, but nothing open: nothing to come back for
    await front.receive([message(25)])
    assert await worker.drain("7") == 0 and await worker.held("7")  # the task retries after chat_lock_seconds
    await worker.services.state.delete("lock:chat:7")
    assert not await worker.held("7")  # free: the drain takes it


async def test_the_sweep_sends_tasks_again_only_for_chats_left_waiting_with_no_holder(cluster):
    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    front.dispatcher.send_task = lambda chat: (_ for _ in ()).throw(ConnectionError("broker down"))
    await front.receive([message(30, chat=7), message(31, chat=8)])
    await settle(front)
    assert await worker.sweep() == 0  # not waiting long enough yet
    cluster.clock.now += 61
    await worker.services.state.add("lock:chat:8", "a-live-worker", 30)
    assert await worker.sweep() == 1
    assert cluster.sent == ["7"]  # chat 8 is being handled: no second task


async def test_an_update_whose_handling_killed_workers_three_times_is_given_up(cluster):
    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    await front.receive([message(40), message(41)])
    await worker.services.run_db(
        worker.services.store.execute, "UPDATE intake SET attempts=? WHERE update_id=40", (MAX_ATTEMPTS,)
    )
    assert await worker.drain("7") == 1
    assert [ids for _, ids, _ in cluster.handled] == [[41]]
    told = await worker.services.run_db(worker.services.store.execute, "SELECT key, chat_id, reply FROM outbox")
    assert [(key, chat) for key, chat, _ in told] == [("intake:given-up:40", 7)]  # its user is told, not left silent
    assert "stopped me each time" in told[0][2]


async def test_an_answer_to_a_plugins_question_reaches_the_worker_through_redis_and_is_gone_after(
    cluster, redis_server
):
    async def scrub(update: dict) -> dict:  # as the transport withholds a text that answers ctx.expect_text
        form = {**update, "message": {k: v for k, v in update["message"].items() if k != "text"}, WITHHELD: True}
        return form

    front, worker = cluster.intake("front", front=True, scrub=scrub), cluster.intake("w")
    await worker.start()
    await front.receive([message(50, text="ZHANG San 110101199003071234")])
    rows = await worker.services.run_db(worker.services.store.execute, "SELECT body FROM intake")
    assert "110101199003071234" not in rows[0][0]  # never in the journal
    raw = redis_server.client().get(f"{cluster.prefix}withheld:50")
    assert raw and "110101199003071234" not in raw and "ZHANG" not in raw  # nor readable in Redis
    assert await worker.drain("7") == 1
    body = cluster.handled[0][2]
    assert body["message"]["text"] == "ZHANG San 110101199003071234" and WITHHELD not in body
    assert await worker.services.state.get("withheld:50") is None  # deleted as it was read


async def test_a_withheld_answer_sealed_under_another_key_is_not_opened(cluster):
    from core.infra.sealing import Sealer
    from core.pipeline.cluster import SEALING

    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    await front.receive([{**message(70, text=""), WITHHELD: True}])
    forged = Sealer.for_token("999:another-bot", SEALING).seal('{"text": "injected"}', "70")
    await worker.services.state.set("withheld:70", forged, 60)  # in place of what the front end handed over
    assert await worker.drain("7") == 1
    assert cluster.handled[0][2][WITHHELD] is True and cluster.handled[0][2]["message"]["text"] == ""


async def test_a_withheld_answer_that_expired_asks_the_user_to_send_it_again(cluster):
    front, worker = cluster.intake("front", front=True), cluster.intake("w")
    await worker.start()
    await front.receive([{**message(60), WITHHELD: True}])  # journaled withheld, the text handed over
    await worker.services.state.delete("withheld:60")  # as if WITHHELD_SECONDS had passed
    assert await worker.drain("7") == 1
    assert cluster.handled[0][2][WITHHELD] is True  # the transport answers "please send it again"


# -- send rates ---------------------------------------------------------------------------------------------------


async def burst(fake, shared: list[SharedRedis | None], per_sender: int) -> int:
    """Each sender (its own limiter and bot) sends ``per_sender`` messages to one chat at once; the 429s drawn."""
    bots = []
    for redis_shared in shared:
        limiter = SendLimiter(shared=redis_shared)
        bot = ExtBot(fake.TOKEN, base_url=fake.base_url, base_file_url=fake.base_file_url, rate_limiter=limiter)
        await bot.initialize()
        bots.append(bot)
    try:
        await asyncio.gather(*(bot.send_message(1001, f"m{i}") for bot in bots for i in range(per_sender)))
    finally:
        for bot in bots:
            await bot.shutdown()
    return sum(1 for c in fake.calls_of("sendMessage") if c.fault == "rate")


async def test_two_senders_with_one_bot_token_share_telegrams_limits_and_draw_no_429(fake_telegram, redis_server):
    fake_telegram.limit_rate(per_chat=1, overall=30, chat_burst=3)
    prefix = redis_server.prefix()
    shared = [SharedRedis(redis_server.url, prefix=prefix) for _ in range(2)]
    try:
        assert await burst(fake_telegram, shared, 3) == 0
    finally:
        for s in shared:
            s.close()
    assert len([c for c in fake_telegram.calls_of("sendMessage") if not c.fault]) == 6


async def test_two_senders_each_keeping_only_its_own_limits_draw_429s(fake_telegram):
    fake_telegram.limit_rate(per_chat=1, overall=30, chat_burst=3)
    assert await burst(fake_telegram, [None, None], 3) > 0  # why the limits are shared in cluster mode


def test_a_budget_lets_its_burst_go_at_once_then_one_per_interval(redis_server):
    shared = SharedRedis(redis_server.url, prefix=redis_server.prefix())
    try:
        waits = [shared.budgets.reserve([Budget("b", 1.0, 3)]) for _ in range(5)]  # 1 a second, 3 at once
        assert waits[:3] == [0, 0, 0] and 0.9 < waits[3] <= 1.0 and 1.9 < waits[4] <= 2.0
        # two budgets at once: the call waits for the later one, and takes its place in both
        assert shared.budgets.reserve([Budget("b", 1.0, 3), Budget("c", 10.0, 1)]) > 2.9
        assert 2.8 < shared.budgets.reserve([Budget("c", 10.0, 1)]) <= 3.1
    finally:
        shared.close()
