"""Nothing lost: per-chat order, albums over several polls, no update answered twice, and an outbox whose
messages arrive although Telegram failed — through the real PTB stack on the fake Bot API.

The process test (``kill -9`` with 20 users waiting) is in ``tests/test_intake_process.py``.
"""

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from core.contract.chat import Button, Reply
from core.contract.hookspecs import hookimpl
from core.pipeline import intake as intake_module
from tests import probe_plugin
from tests.test_telegram_e2e import png, slow_echo, telegram_config

FACES = Path(__file__).resolve().parent.parent / "examples" / "faces"


def texts_to(fake, chat_id: int) -> list[str]:
    """What the bot sent to ``chat_id`` and Telegram accepted, in order."""
    return [
        c.text for c in fake.calls if c.chat_id == chat_id and c.method in ("sendMessage", "sendPhoto") and not c.fault
    ]


async def journal_when_idle(tmp_path) -> list[tuple]:
    """The journal's rows once every update in it is marked handled (a handler's last reply comes first)."""
    for _ in range(100):
        db = sqlite3.connect(tmp_path / "bot.sqlite3")
        rows = db.execute("SELECT update_id, body, done FROM intake ORDER BY update_id").fetchall()
        db.close()
        if all(done is not None for *_, done in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"updates left unfinished: {rows}")


async def settled(outbox, key: str) -> str | None:
    """The outbox state of ``key`` once it is no longer queued (the mark follows Telegram's answer)."""
    for _ in range(100):
        state = await outbox.state(key)
        if state != "queued":
            return state
        await asyncio.sleep(0.05)
    return state


@pytest.fixture
def bot(fake_telegram, start_bot, tmp_path):
    """``await bot(**overrides)``: the bot with the probe plugin on the fake Bot API, its database in tmp_path."""

    async def start(**overrides):
        overrides.setdefault("storage", {"path": str(tmp_path / "bot.sqlite3")})
        return await start_bot(telegram_config(fake_telegram, **overrides), {"probe": probe_plugin})

    return start


# ---------------------------------------------------------------------------------------------- order
@pytest.mark.slow
async def test_facematch_then_two_photos_sent_at_once_are_compared(fake_telegram, start_bot):
    config = telegram_config(fake_telegram, plugins={"facematch": {"engine": "local", "picture": False}})
    await start_bot(config, {"probe": probe_plugin})
    fake_telegram.user_sends_text("/facematch")
    fake_telegram.user_sends_photo((FACES / "obama_1.jpg").read_bytes())
    fake_telegram.user_sends_photo((FACES / "obama_2.jpg").read_bytes())
    prompt = await fake_telegram.bot_replied(timeout=30)
    first = await fake_telegram.bot_replied(timeout=60)
    verdict = await fake_telegram.bot_replied(timeout=60)
    assert prompt.text.startswith("Send me two photos of faces")
    assert first.text.startswith("Got the first photo")
    assert "likely the same person" in verdict.text
    assert not any("What should I do" in t for t in texts_to(fake_telegram, 1001))


async def test_a_chats_next_message_waits_for_the_slow_one_while_other_chats_go_on(fake_telegram, bot):
    release = slow_echo(await bot())
    fake_telegram.user_sends_text("/echo", user_id=1)
    fake_telegram.user_sends_text("/nope", user_id=1)
    fake_telegram.user_sends_text("/nope", user_id=2)
    assert (await fake_telegram.bot_replied(2)).text.startswith("I don't know /nope")
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1) == []  # chat 1's second message waits for its first
    release.set()
    assert (await fake_telegram.bot_replied(1)).text == "slow done"
    assert (await fake_telegram.bot_replied(1)).text.startswith("I don't know /nope")


async def test_an_album_whose_parts_arrive_in_separate_polls_is_one_album(fake_telegram, bot):
    await bot(telegram={"album_wait": 0.4})
    images = [png(20 + i, 20) for i in range(3)]
    group = "13000000000000999"
    fake_telegram.user_sends_photo(images[0], caption="/snap", media_group_id=group)
    for image in images[1:]:  # each part 0.25 s after the one before: 0.5 s in all, more than album_wait
        await asyncio.sleep(0.25)
        fake_telegram.user_sends_photo(image, media_group_id=group)
    reply = await fake_telegram.bot_replied()
    assert reply.text == f"snap got 3 photos {[len(i) for i in images]} args=[]"
    batches = [len(c.result) for c in fake_telegram.calls_of("getUpdates") if c.result]
    assert len(batches) >= 2, batches  # the parts really came in separate getUpdates answers
    await asyncio.sleep(0.6)
    assert len(texts_to(fake_telegram, 1001)) == 1


async def test_an_album_is_complete_at_the_latest_after_album_max_wait(fake_telegram, bot):
    await bot(telegram={"album_wait": 0.5, "album_max_wait": 0.6})
    group = "13000000000000998"
    for i in range(4):  # parts 0.3 s apart keep the debounce going: the bound ends it
        fake_telegram.user_sends_photo(png(20 + i, 20), caption="/snap" if i == 0 else None, media_group_id=group)
        await asyncio.sleep(0.3)
    first = await fake_telegram.bot_replied()
    assert first.text.startswith("snap got 2 photos") or first.text.startswith("snap got 3 photos")


# ---------------------------------------------------------------------------------------------- intake
async def test_an_update_is_journaled_before_the_next_poll_confirms_it_to_telegram(fake_telegram, bot, monkeypatch):
    release = asyncio.Event()
    journaled = asyncio.Event()
    real_receive = intake_module.Intake.receive

    async def slow_receive(self, updates):
        journaled.set()
        await release.wait()
        return await real_receive(self, updates)

    monkeypatch.setattr(intake_module.Intake, "receive", slow_receive)
    await bot()
    message = fake_telegram.user_sends_text("/echo hi")
    await asyncio.wait_for(journaled.wait(), 10)
    await asyncio.sleep(1.5)  # longer than a long poll: had the bot polled again, it would have by now
    assert fake_telegram.pending_updates, "the update was confirmed before it was journaled"
    assert all(int(c.params.get("offset") or 0) <= 1 for c in fake_telegram.calls_of("getUpdates"))
    release.set()
    assert (await fake_telegram.bot_replied()).text == "hi hi"
    assert message["message_id"]


async def test_an_update_telegram_delivers_again_is_not_answered_again(fake_telegram, bot):
    transport = await bot()
    fake_telegram.user_sends_text("/echo once")
    assert (await fake_telegram.bot_replied()).text == "hi once"
    again = fake_telegram.calls_of("getUpdates")
    update = next(u for c in again if c.result for u in c.result)
    assert await transport.intake.receive([update]) == 0  # the same update_id, e.g. after a lost confirmation
    fake_telegram.user_sends_text("/echo after")
    assert (await fake_telegram.bot_replied()).text == "hi after"
    assert texts_to(fake_telegram, 1001) == ["hi once", "hi after"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_an_update_cut_off_by_a_shutdown_is_finished_after_the_restart_without_repeating(
    fake_telegram, bot, start_bot, monkeypatch, request, database
):
    monkeypatch.setattr("core.runtime.roles.STOP_WAIT", 0.2)
    cluster = {}  # sqlite: the journal in tmp_path; postgresql: in a fresh database of the test server
    if database == "postgresql":
        cluster = {"cluster": {"database_url": request.getfixturevalue("postgres_server").database()}}

    async def two_steps(ctx):
        await ctx.reply("working on it")
        await asyncio.sleep(30)  # cut off by the shutdown
        await ctx.reply("never")

    async def finish(ctx):
        await ctx.reply("working on it")  # reply 0 was sent before: skipped
        await ctx.reply("done")

    # the handler is in place before each start: the replay may begin while the bot is still starting
    handlers = [two_steps]
    original = probe_plugin.aipbot_commands

    @hookimpl
    def aipbot_commands(config):
        commands = original(config)
        for command in commands:
            if command.name == "echo":
                command.handler = lambda ctx: handlers[-1](ctx)
        return commands

    monkeypatch.setattr(probe_plugin, "aipbot_commands", aipbot_commands)
    await bot(**cluster)
    fake_telegram.user_sends_text("/echo")
    assert (await fake_telegram.bot_replied()).text == "working on it"
    await asyncio.sleep(0.2)
    await start_bot.stop()

    handlers.append(finish)
    await bot(**cluster)  # same database: the unfinished update is replayed first
    assert (await fake_telegram.bot_replied()).text == "done"
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1001) == ["working on it", "done"]


async def test_a_button_press_and_an_edited_message_go_through_the_journal(fake_telegram, bot, tmp_path):
    await bot()
    asked = fake_telegram.user_sends_text("/ask")
    choose = await fake_telegram.bot_replied()
    await fake_telegram.bot_replied()
    fake_telegram.user_presses_button(choose.result, choose.callback_data[0])
    assert (await fake_telegram.bot_replied()).text == "pressed yes by 1001"
    # the user edits "/ask" into "/echo edited": Telegram sends an `edited_message` update
    fake_telegram._queue({"edited_message": {**asked, "text": "/echo edited", "edit_date": asked["date"] + 1}})
    fake_telegram.user_sends_text("/echo after")
    assert (await fake_telegram.bot_replied()).text == "hi after"  # the edit ran nothing
    rows = await journal_when_idle(tmp_path)
    assert len(rows) == 4  # /ask, the press, the edit, /echo after
    assert all(body is None for _, body, _ in rows), "handled updates keep no text"


async def test_handled_updates_are_forgotten_after_a_day(fake_telegram, bot, tmp_path, monkeypatch):
    transport = await bot()
    fake_telegram.user_sends_text("/echo hi")
    await fake_telegram.bot_replied()
    assert len(await journal_when_idle(tmp_path)) == 1
    monkeypatch.setattr(transport.intake, "clock", lambda: 10**10)
    assert await transport.intake._run(intake_module.Journal.prune) == 1


# ---------------------------------------------------------------------------------------------- outbox
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_result_whose_sending_fails_is_retried_until_it_arrives_once(fake_telegram, bot, request, database):
    cluster = {}
    if database == "postgresql":
        cluster = {"cluster": {"database_url": request.getfixturevalue("postgres_server").database()}}
    transport = await bot(outbox={"backoff": 0.05}, **cluster)
    outbox = transport.app.services.outbox
    fake_telegram.fail("sendMessage", times=3, kind="5xx")
    button = Button("Open", url="https://example.org/x")
    assert await outbox.put(1001, Reply("Verification passed", [[button]]), key="realname:s1") is True
    reply = await fake_telegram.bot_replied(timeout=10)
    assert reply.text == "Verification passed" and reply.params["reply_markup"]
    assert len([c for c in fake_telegram.calls_of("sendMessage") if c.fault]) == 3
    assert await settled(outbox, "realname:s1") == "delivered"
    assert await outbox.put(1001, Reply("Verification passed"), key="realname:s1") is False  # once per key
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1001) == ["Verification passed"]


async def test_a_result_not_yet_delivered_at_shutdown_arrives_after_the_restart(
    fake_telegram, bot, start_bot, tmp_path
):
    # no retry before the shutdown: neither the outbox's nor the sending layer's own
    transport = await bot(outbox={"backoff": 3600}, telegram={"send_retries": 0})
    fake_telegram.fail("sendMessage", times=3, kind="5xx")
    await transport.app.services.outbox.put(1001, Reply("Verification failed"), key="realname:s2")
    assert await transport.app.services.outbox.state("realname:s2") == "queued"
    await start_bot.stop()
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    assert db.execute("SELECT reply FROM outbox WHERE key='realname:s2'").fetchone()[0] is not None
    db.close()

    # a restart makes it due at once; two more failures
    transport = await bot(outbox={"backoff": 0.05}, telegram={"send_retries": 0})
    assert (await fake_telegram.bot_replied()).text == "Verification failed"
    assert len([c for c in fake_telegram.calls_of("sendMessage") if c.fault]) == 3
    assert await settled(transport.app.services.outbox, "realname:s2") == "delivered"
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    assert db.execute("SELECT reply FROM outbox WHERE key='realname:s2'").fetchone()[0] is None  # text erased
    db.close()


async def test_a_message_telegram_refuses_is_given_up_and_a_photo_is_never_queued(fake_telegram, bot):
    transport = await bot()
    outbox = transport.app.services.outbox
    fake_telegram.fail("sendMessage", times=1, kind="400", description="Bad Request: chat not found")
    await outbox.put(777, Reply("alert"), key="alert:x:777")
    assert await settled(outbox, "alert:x:777") == "failed"
    with pytest.raises(ValueError):
        await outbox.put(1001, Reply("picture", photo=b"\xff\xd8"), key="p")


async def test_admins_are_alerted_through_the_outbox(fake_telegram, bot, tmp_path):
    await bot()
    fake_telegram.user_sends_text("/broken", user_id=5)
    await fake_telegram.bot_replied(5)
    alert = await fake_telegram.bot_replied(42)
    assert alert.text.startswith("⚠️ aipbot needs its admin: /broken failed")
    await asyncio.sleep(0.1)
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    rows = db.execute("SELECT key, chat_id, state, reply FROM outbox").fetchall()
    db.close()
    assert [(chat, state, reply) for _, chat, state, reply in rows] == [(42, "delivered", None)]
    assert rows[0][0].startswith("alert:")


async def test_a_message_queued_with_the_callers_own_records_is_sent_after_the_commit(fake_telegram, bot):
    transport = await bot()
    services = transport.app.services

    def finish_and_notify(db):
        db.execute(text("CREATE TABLE IF NOT EXISTS job (id TEXT PRIMARY KEY, state TEXT)"))
        db.execute(text("INSERT INTO job VALUES('s3', 'passed')"))
        return services.outbox.put_in(db, 1001, Reply("Verification passed"), key="realname:s3")

    assert await services.run_db(services.store.transaction, finish_and_notify) is True
    services.outbox.wake()
    assert (await fake_telegram.bot_replied()).text == "Verification passed"


async def test_after_a_clean_restart_in_memory_nothing_answered_before_is_answered_again(fake_telegram, start_bot):
    config = telegram_config(fake_telegram)  # storage.path ":memory:": the journal goes with the process
    await start_bot(config, {"probe": probe_plugin})
    fake_telegram.user_sends_text("/echo once")
    assert (await fake_telegram.bot_replied()).text == "hi once"
    await start_bot.stop()  # a last getUpdates confirms what was handled
    assert not fake_telegram.pending_updates
    await start_bot(config, {"probe": probe_plugin})
    fake_telegram.user_sends_text("/echo after")
    assert (await fake_telegram.bot_replied()).text == "hi after"
    assert texts_to(fake_telegram, 1001) == ["hi once", "hi after"]


async def test_the_journal_keeps_no_names_and_no_answer_to_a_question(
    fake_telegram, bot, start_bot, tmp_path, monkeypatch
):
    monkeypatch.setattr(intake_module.Journal, "finish", lambda db, now, ids: None)  # bodies stay, to look at
    await bot()
    fake_telegram.user_sends_text("/name", first_name="Grace", username="ghopper")
    assert (await fake_telegram.bot_replied()).text == "what is your name?"
    fake_telegram.user_sends_text("Grace Hopper", first_name="Grace", username="ghopper")
    assert (await fake_telegram.bot_replied()).text.startswith("hello Grace Hopper")
    fake_telegram.user_sends_text("my card 6222020200112233445", first_name="Grace")
    assert (await fake_telegram.bot_replied()).text.startswith("Send me a photo")
    await asyncio.sleep(0.2)
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    bodies = [row[0] for row in db.execute("SELECT body FROM intake ORDER BY update_id")]
    db.close()
    assert len(bodies) == 3 and '"/name"' in bodies[0]
    assert not any("Grace" in b or "ghopper" in b or "6222020200112233445" in b for b in bodies)
    assert all('"aipbot_withheld": true' in b for b in bodies[1:])

    await start_bot.stop()  # not marked handled: all three are replayed, and every reply was sent before
    await bot()
    await asyncio.sleep(1.0)
    assert texts_to(fake_telegram, 1001) == [
        "what is your name?",
        "hello Grace Hopper (message 3 deleted: True)",
        "Send me a photo, or a command. /help lists what I can do.",
    ]


async def test_an_answer_cut_off_by_a_restart_is_asked_for_again_not_read_from_disk(
    fake_telegram, bot, start_bot, monkeypatch
):
    monkeypatch.setattr("core.runtime.roles.STOP_WAIT", 0.2)
    transport = await bot()

    async def ask_then_hang(ctx):
        if ctx.step != "asked":
            await ctx.expect_text("asked")
            await ctx.reply("what is your name?")
            return
        await asyncio.sleep(30)  # cut off by the shutdown

    transport.app.router.commands["name"].handler = ask_then_hang
    fake_telegram.user_sends_text("/name")
    assert (await fake_telegram.bot_replied()).text == "what is your name?"
    fake_telegram.user_sends_text("Grace Hopper")
    await asyncio.sleep(0.3)
    await start_bot.stop()
    await bot()
    reply = await fake_telegram.bot_replied()
    assert reply.text == "I restarted before I could read your last message. Please send it again."


async def test_polling_waits_the_retry_after_telegram_asks_for_on_getupdates(fake_telegram, bot):
    await bot()
    await fake_telegram.wait_for("getUpdates")
    fake_telegram.fail("getUpdates", times=1, kind="429", retry_after=3)
    for _ in range(200):
        refused = next((c for c in fake_telegram.calls_of("getUpdates") if c.fault == "429"), None)
        if refused is not None:
            break
        await asyncio.sleep(0.05)
    assert refused is not None
    fake_telegram.user_sends_text("/echo after")
    assert (await fake_telegram.bot_replied(timeout=15)).text == "hi after"
    later = [c for c in fake_telegram.calls_of("getUpdates") if c.at > refused.at]
    assert later and later[0].at - refused.at >= 3.0, "polled again before Telegram's retry_after"
