"""The state port: one suite, run against every implementation (memory, SQLite, a real Redis server)."""

import asyncio
import socket

import pytest

from core.infra.keys import join as key
from core.infra.state import MemoryState, RedisState, RedisUnavailable, SQLiteState, open_state
from core.runtime.config import ConfigError, validate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def state(request, tmp_path):
    clock = Clock()
    if request.param == "memory":
        made = MemoryState(clock=clock)
    elif request.param == "sqlite":
        made = SQLiteState(tmp_path / "db", clock=clock)
    else:
        server = request.getfixturevalue("redis_server")
        made = RedisState(server.url, prefix=server.prefix(), clock=clock)
    made.test_clock = clock
    yield made
    made.close()


def test_keys_are_built_from_their_parts():
    assert key("conv", 5, -7) == "conv:5:-7"


async def test_a_value_set_is_read_back_as_json_until_it_expires(state):
    await state.set("a", {"step": "second", "photos": [{"ref": "F1"}], "n": 2}, ttl=10)
    assert await state.get("a") == {"step": "second", "photos": [{"ref": "F1"}], "n": 2}
    state.test_clock.now += 9.9
    assert await state.get("a") is not None
    state.test_clock.now += 0.2
    assert await state.get("a") is None
    assert await state.get("never") is None


async def test_only_plain_json_values_can_be_stored(state):
    with pytest.raises(TypeError):
        await state.set("a", {"photo": object()}, ttl=10)
    with pytest.raises(ValueError):
        await state.set("a", float("nan"), ttl=10)
    assert await state.get("a") is None


async def test_add_stores_only_when_nothing_live_is_there(state):
    assert await state.add("a", 1, ttl=5)
    assert not await state.add("a", 2, ttl=5)
    assert await state.get("a") == 1
    state.test_clock.now += 6
    assert await state.add("a", 3, ttl=5)
    assert await state.get("a") == 3


async def test_replace_is_compare_and_set(state):
    assert await state.replace("a", None, {"v": 1}, ttl=5)
    assert not await state.replace("a", {"v": 0}, {"v": 2}, ttl=5)
    assert await state.replace("a", {"v": 1}, {"v": 2}, ttl=5)
    assert await state.get("a") == {"v": 2}
    assert await state.replace("a", {"v": 2}, None, ttl=5)
    assert await state.get("a") is None


async def test_delete_returns_what_was_there(state):
    await state.set("a", [1, 2], ttl=5)
    assert await state.delete("a") == [1, 2]
    assert await state.delete("a") is None


async def test_append_builds_a_list_and_restarts_its_expiry(state):
    assert await state.append("album", {"part": 1}, ttl=2) == 1
    state.test_clock.now += 1.5
    assert await state.append("album", {"part": 2}, ttl=2) == 2
    state.test_clock.now += 1.5
    assert await state.get("album") == [{"part": 1}, {"part": 2}]
    state.test_clock.now += 1
    assert await state.get("album") is None


async def test_purge_removes_only_expired_entries(state):
    await state.set("old", 1, ttl=1)
    await state.set("new", 2, ttl=100)
    state.test_clock.now += 2
    assert await state.purge() == 1
    assert await state.get("new") == 2


async def test_a_lock_admits_one_holder_at_a_time(state):
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with state.lock("user:1", poll=0.001):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.005)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(5)))
    assert most == 1
    assert await state.get("lock:user:1") is None


async def test_a_lock_whose_holder_died_expires(state):
    assert await state.add("lock:job", "dead-holder", ttl=5)
    state.test_clock.now += 6
    async with state.lock("job", ttl=5):
        assert await state.get("lock:job") not in (None, "dead-holder")


async def test_sqlite_state_survives_reopening_the_file(tmp_path):
    first = SQLiteState(tmp_path / "db")
    await first.set("conv:1:1", {"command": "ocr"}, ttl=60)
    first.close()
    second = SQLiteState(tmp_path / "db")
    try:
        assert await second.get("conv:1:1") == {"command": "ocr"}
    finally:
        second.close()


async def test_two_sqlite_states_on_one_file_see_each_others_locks(tmp_path):
    a, b = SQLiteState(tmp_path / "db"), SQLiteState(tmp_path / "db")
    try:
        assert await a.add("lock:x", "a", ttl=60)
        assert not await b.add("lock:x", "b", ttl=60)
    finally:
        a.close()
        b.close()


async def test_two_redis_states_on_one_server_see_each_others_locks_and_values(redis_server):
    prefix = redis_server.prefix()
    a, b = RedisState(redis_server.url, prefix=prefix), RedisState(redis_server.url, prefix=prefix)
    try:
        assert await a.add("lock:x", "a", ttl=60)
        assert not await b.add("lock:x", "b", ttl=60)
        await b.set("conv:1:1", {"command": "ocr", "photos": []}, ttl=60)
        assert await a.get("conv:1:1") == {"command": "ocr", "photos": []}
        assert await b.replace("lock:x", "a", None, ttl=60)
        assert await a.get("lock:x") is None
    finally:
        a.close()
        b.close()


async def test_redis_keys_live_under_the_prefix_and_redis_itself_expires_them(redis_server):
    prefix = redis_server.prefix()
    made = RedisState(redis_server.url, prefix=prefix)
    raw = redis_server.client()
    try:
        await made.set("short", "x", ttl=1)
        assert 1000 < raw.pttl(prefix + "short") <= 1000 + 200
        assert raw.keys(prefix + "*") == [prefix + "short"]
        await asyncio.sleep(1.2)
        assert not raw.exists(prefix + "short")
    finally:
        made.close()
        raw.close()


async def test_concurrent_appends_from_several_processes_lose_no_item(redis_server):
    prefix = redis_server.prefix()
    states = [RedisState(redis_server.url, prefix=prefix) for _ in range(3)]
    try:
        lengths = await asyncio.gather(*(states[i % 3].append("album:1:g", {"part": i}, ttl=30) for i in range(60)))
        assert sorted(lengths) == list(range(1, 61))
        parts = await states[0].get("album:1:g")
        assert sorted(p["part"] for p in parts) == list(range(60))
    finally:
        for made in states:
            made.close()


async def test_purge_touches_only_its_own_prefix(redis_server):
    clock = Clock()
    mine = RedisState(redis_server.url, prefix=redis_server.prefix(), clock=clock)
    other = RedisState(redis_server.url, prefix=redis_server.prefix(), clock=clock)
    try:
        await mine.set("a", 1, ttl=1)
        await other.set("a", 2, ttl=1)
        clock.now += 2
        assert await mine.purge() == 1
        clock.now -= 2
        assert await other.get("a") == 2
    finally:
        mine.close()
        other.close()


def test_a_redis_state_is_usable_from_one_loop_after_another_and_closed_after_both(redis_server):
    made = RedisState(redis_server.url, prefix=redis_server.prefix())
    asyncio.run(made.set("a", [1], ttl=60))
    assert asyncio.run(made.append("a", 2, ttl=60)) == 2
    made.close()
    made.close()


def test_open_state_uses_redis_when_a_url_is_given(redis_server, tmp_path):
    made = open_state(str(tmp_path / "db"), redis_server.url)
    try:
        assert isinstance(made, RedisState)
    finally:
        made.close()
    assert isinstance(open_state(":memory:", ""), MemoryState)


def test_an_unreachable_redis_is_one_line_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RedisUnavailable) as caught:
        RedisState(f"redis://:secret@127.0.0.1:{port}/0")
    assert str(caught.value) == f"cannot connect to redis://:***@127.0.0.1:{port}/0 (Connection refused)"


def test_an_unreachable_redis_at_start_is_a_configuration_error(tmp_path):
    from core.runtime.app import _open_store

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConfigError) as caught:
        _open_store(str(tmp_path / "db"), f"redis://127.0.0.1:{port}/0")
    assert str(caught.value) == f"cluster.redis_url: cannot connect to redis://127.0.0.1:{port}/0 (Connection refused)"


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis:/x"])
def test_cluster_redis_url_must_be_a_redis_url(url):
    with pytest.raises(ConfigError, match=r"^cluster\.redis_url: must be a redis:// or rediss:// URL"):
        validate({"cluster": {"redis_url": url}})
    assert validate({"cluster": {"redis_url": "rediss://h:6380/1"}})["cluster"]["redis_url"] == "rediss://h:6380/1"
    assert validate({})["cluster"]["redis_url"] == ""


async def test_a_bot_with_cluster_redis_url_keeps_its_conversations_in_redis(redis_server):
    from tests import probe_plugin
    from tests.harness import Harness

    raw = redis_server.client()
    bot = Harness(
        {"plugins": {"probe": {}}, "cluster": {"redis_url": redis_server.url}}, extra_plugins={"probe": probe_plugin}
    )
    try:
        async with bot:
            assert isinstance(bot.app.services.state, RedisState)
            assert Harness.text(await bot.send("/pair", photos=[b"\x89PNG one"])) == "pair got the first photo"
            assert raw.exists("aipbot:conv:1:1")
            assert Harness.text(await bot.send(photos=[b"\x89PNG two"])) == "pair got 2 photos"
        assert bot.app.services.state._thread.is_alive() is False  # stopping the bot closed the client
    finally:
        for name in raw.scan_iter("aipbot:*"):
            raw.delete(name)
        raw.close()


async def test_a_lock_waiter_gives_up_after_its_timeout(state):
    async with state.lock("busy", ttl=60):
        with pytest.raises(TimeoutError):
            async with state.lock("busy", ttl=60, poll=0.001, timeout=0.05):
                pass


async def test_a_held_lock_can_be_extended_and_is_lost_once_taken_over(state):
    async with state.lock("long", ttl=5) as held:
        state.test_clock.now += 4
        assert await held.extend()
        state.test_clock.now += 4
        assert await state.get("lock:long") == held.token
        state.test_clock.now += 6
        assert await state.add("lock:long", "other", ttl=5)
        assert not await held.extend()


async def test_photos_held_for_conversations_are_bounded_by_bytes_and_the_oldest_let_go():
    from core.contract.chat import Photo
    from core.pipeline.conversation import Conversation, Conversations

    table = Conversations(MemoryState(), lambda: 5, max_bytes=1000)
    photos = [Photo.from_bytes(b"x" * 400, ref=f"file-{n}") for n in range(3)]
    for n, photo in enumerate(photos):
        await table.save(n, n, Conversation("snap", "photo"), [photo])
    held = list(table.held.values())
    assert photos[0] not in held and photos[1] in held and photos[2] in held
    huge = Photo.from_bytes(b"x" * 2000, ref="file-huge")
    await table.save(9, 9, Conversation("snap", "photo"), [huge])  # larger than the bound: by reference only
    assert (await table.get(9, 9)).photos[0]["ref"] == "file-huge"


async def test_a_conversation_record_this_version_cannot_read_is_dropped_not_a_crash():
    from core.pipeline.conversation import Conversation, Conversations

    state = MemoryState()
    table = Conversations(state, lambda: 5)
    await state.set("conv:1:1", {"command": "ocr", "wants": "photo", "photos": [], "new_field": 1}, ttl=60)
    assert (await table.get(1, 1)).command == "ocr"  # unknown keys are ignored
    await state.set("conv:1:1", ["not", "a", "record"], ttl=60)
    assert await table.get(1, 1) is None
    with pytest.raises(LookupError):
        await table.take(1, 1, None)
    await table.save(1, 1, Conversation("snap", "photo"), [])
    assert (await table.get(1, 1)).command == "snap"
