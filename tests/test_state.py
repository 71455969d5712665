"""The state port: one suite, run against every implementation (memory and SQLite)."""

import asyncio

import pytest

from core.state import MemoryState, SQLiteState, key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def state(request, tmp_path):
    clock = Clock()
    made = MemoryState(clock=clock) if request.param == "memory" else SQLiteState(tmp_path / "db", clock=clock)
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
