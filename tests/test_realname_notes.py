"""/verify with ``method: video_note`` in-process (tests/harness.py) against the fake Tencent FaceID and the fake
Baidu: the identity question, the code, the note, refusals before any provider call, failures told apart, the
cool-down, the answer once through the outbox; the console's video notes."""

from __future__ import annotations

import time

import pytest

from core.contract.chat import Chat, Incoming, VideoNote
from core.runtime.config import ConfigError
from plugins.realname.note_providers import BaiduNotes, TencentNotes
from tests.harness import Harness
from tests.videos import video_note

ADMIN = 42
NAME = "韩梅梅"
ID_NUMBER = "11010519491231002X"
ASK = "This verification checks your face against your ID card record."
FAST_HTTP = {"connect_timeout": 2.0, "read_timeout": 5.0, "retries": 1, "backoff": 0.01}


@pytest.fixture(scope="module")
def note() -> bytes:
    return video_note(2.0, seed=3)


def tencent_bot(fake_tencent, **plugin) -> Harness:
    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")
    overrides = {
        "providers": {"tencent": fake_tencent.provider_config()},
        "http": FAST_HTTP,
        "access": {"admins": [ADMIN]},
        "plugins": {"realname": {"method": "video_note", "provider": "tencent", "poll_seconds": 3600, **plugin}},
    }
    return Harness(overrides)


def baidu_bot(fake_baidu, **plugin) -> Harness:
    fake_baidu.add_person(ID_NUMBER, NAME, "meimei")
    overrides = {
        **fake_baidu.config(http=FAST_HTTP),
        "access": {"admins": [ADMIN]},
        "plugins": {"realname": {"method": "video_note", "provider": "baidu", "poll_seconds": 3600, **plugin}},
    }
    return Harness(overrides)


async def send_note(bot: Harness, data: bytes, *, user_id: int = 1, **meta) -> list:
    meta.setdefault("duration", 3)
    meta.setdefault("length", 240)
    meta.setdefault("sent_at", time.time())
    bot._message_id += 1
    video = VideoNote.from_bytes(data, **meta)
    # as the Telegram edge makes it: the error stands when no step waits for a note
    incoming = Incoming(bot.user(user_id), Chat(user_id), "", [], bot._message_id, error="error.animation", video=video)
    return await bot.deliver(incoming)


async def code_after_identity(bot: Harness, fake) -> str:
    assert Harness.text(await bot.send("/verify")).startswith(ASK)
    replies = await bot.send(f"{NAME} {ID_NUMBER}")
    assert bot.transport.deleted[-1] == (1, bot._message_id)  # the identity message is deleted at once
    code = fake.codes_issued[-1] if hasattr(fake, "codes_issued") else fake.session_codes[-1]
    assert code in Harness.text(replies) and "round camera button" in Harness.text(replies)
    return code


def rows(bot: Harness, sql: str = "SELECT state, provider, score FROM realname_sessions") -> list:
    return bot.app.services.store.execute(sql)


# -- Tencent ----------------------------------------------------------------------------------------------


async def test_tencent_passed_answer_once_masked(fake_tencent, note):
    async with tencent_bot(fake_tencent) as bot:
        code = await code_after_identity(bot, fake_tencent)
        fake_tencent.set_video(note, "meimei", says=code)
        replies = await send_note(bot, note)
        text = Harness.text(replies)
        assert text.startswith("✅ Real-name verification passed.")
        assert "韩*" in text and "110***********002X" in text and NAME not in text and ID_NUMBER not in text
        assert "Face similarity: 88.6 / 100" in text
        assert rows(bot) == [("passed", "tencent-note", 88.6)]
        outbox = bot.app.services.store.execute("SELECT key FROM outbox")
        assert len(outbox) == 1 and outbox[0][0].startswith("realname:")
        assert fake_tencent.count("LivenessRecognition") == 1
        # the step is over: another note is not checked
        again = await send_note(bot, note)
        assert Harness.text(again) == bot.app.catalogue.text("en", "error.animation")
        assert fake_tencent.count("LivenessRecognition") == 1
        status = Harness.text(await bot.send("/verify status"))
        assert status.startswith("✅") and "88.6" in status and NAME not in status


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"forwarded": True}, "Forwarded video notes are not accepted"),
        ({"kind": "video"}, "That is an ordinary video, not a video note"),
        ({"kind": "animation"}, "That is an animation"),
        ({"duration": 45}, "That note is 45 seconds long; at most 30 seconds"),
        ({"duration": 0.2}, "too short"),
        ({"size": 7 * 1024 * 1024}, "That note is too large (at most 6.0 MB)"),
    ],
)
async def test_refused_before_any_provider_call(fake_tencent, note, meta, expected):
    async with tencent_bot(fake_tencent) as bot:
        code = await code_after_identity(bot, fake_tencent)
        fake_tencent.set_video(note, "meimei", says=code)
        video = VideoNote.from_bytes(note, duration=3, length=240, sent_at=time.time())
        for name, value in meta.items():
            setattr(video, name, value)
        bot._message_id += 1
        replies = await bot.deliver(Incoming(bot.user(), Chat(1), "", [], bot._message_id, video=video))
        text = Harness.text(replies)
        assert expected in text and code in text  # the same code still stands
        assert fake_tencent.count("LivenessRecognition") == 0
        assert Harness.text(await send_note(bot, note)).startswith("✅")  # and a proper note then passes


async def test_the_identity_is_checked_locally_and_deleted_before_any_provider_call(fake_tencent):
    async with tencent_bot(fake_tencent) as bot:
        assert Harness.text(await bot.send("/verify")).startswith(ASK)
        text = Harness.text(await bot.send(f"{NAME} 110105194912310021"))  # a wrong check character
        assert text.startswith("That is not a valid 18-digit ID number") and "again" in text
        assert bot.transport.deleted[-1] == (1, bot._message_id)
        assert fake_tencent.count("GetLiveCode") == 0 and fake_tencent.count("LivenessRecognition") == 0
        waiting = await bot.app.services.conversations.get(1, 1)
        assert waiting.step == "identity" and waiting.data == {"fresh": False, "tries": 1}  # flags only
        code = Harness.text(await bot.send(f"{ID_NUMBER}，{NAME}"))  # either order, a Chinese comma
        assert fake_tencent.codes_issued[-1] in code
        waiting = await bot.app.services.conversations.get(1, 1)
        assert waiting.step == "note" and waiting.data["sealed"]
        assert NAME not in str(waiting.to_json()) and ID_NUMBER not in str(waiting.to_json())  # only sealed


async def test_photo_and_text_instead_of_a_note(fake_tencent, note):
    async with tencent_bot(fake_tencent) as bot:
        code = await code_after_identity(bot, fake_tencent)
        import io

        from PIL import Image

        png = io.BytesIO()
        Image.new("RGB", (64, 64)).save(png, "PNG")
        assert "That is a photo, not a video note" in Harness.text(await bot.send(photos=[png.getvalue()]))
        assert "not a message" in Harness.text(await bot.send("here is my note"))
        assert fake_tencent.count("LivenessRecognition") == 0
        fake_tencent.set_video(note, "meimei", says=code)
        assert Harness.text(await send_note(bot, note)).startswith("✅")


async def test_expired_code_and_a_note_recorded_before_the_code_get_a_new_code(fake_tencent, note):
    async with tencent_bot(fake_tencent, code_minutes=1) as bot:
        first = await code_after_identity(bot, fake_tencent)
        late = await send_note(bot, note, sent_at=time.time() + 61)
        assert "That code had expired" in Harness.text(late)
        second = fake_tencent.codes_issued[-1]
        assert len(fake_tencent.codes_issued) == 2 and second in Harness.text(late)
        early = await send_note(bot, note, duration=20, sent_at=time.time())  # began 20 s ago: before the code
        assert "recorded before I gave you the code" in Harness.text(early)
        assert fake_tencent.count("LivenessRecognition") == 0
        assert len(fake_tencent.codes_issued) == 3 and fake_tencent.codes_issued[-1] in Harness.text(early)
        fake_tencent.set_video(note, "meimei", says=fake_tencent.codes_issued[-1])
        assert Harness.text(await send_note(bot, note)).startswith("✅")
        assert first == fake_tencent.codes_issued[0]


async def test_a_second_verify_while_one_runs(fake_tencent, note):
    async with tencent_bot(fake_tencent) as bot:
        code = await code_after_identity(bot, fake_tencent)
        text = Harness.text(await bot.send("/verify"))
        assert "already have a verification running" in text and code in text
        assert fake_tencent.count("GetLiveCode") == 1
        fake_tencent.set_video(note, "meimei", says=code)
        assert Harness.text(await send_note(bot, note)).startswith("✅")  # the running one goes on
        assert Harness.text(await bot.send("/verify new")).startswith(ASK)


async def test_failures_told_apart_new_codes_and_the_cooldown(fake_tencent, note):
    async with tencent_bot(fake_tencent, max_failures=3, cooldown_minutes=30) as bot:
        code = await code_after_identity(bot, fake_tencent)
        fake_tencent.set_video(note, "meimei", says="0000" if code != "0000" else "1111")
        one = Harness.text(await send_note(bot, note))
        assert "The code was not read clearly enough" in one and fake_tencent.codes_issued[-1] in one
        fake_tencent.set_video(note, None)
        two = Harness.text(await send_note(bot, note))
        assert "No face could be found" in two and fake_tencent.codes_issued[-1] in two
        fake_tencent.set_video(note, "meimei", faces=2, says=fake_tencent.codes_issued[-1])
        three = Harness.text(await send_note(bot, note))
        assert three.startswith("❌") and "More than one face" in three and "try again in 30 minutes" in three
        assert rows(bot) == [("failed", "tencent-note", None)]
        assert "try again in 30 minutes" in Harness.text(await bot.send("/verify"))
        assert fake_tencent.count("LivenessRecognition") == 3


@pytest.mark.parametrize(
    ("video", "id_number", "expected"),
    [
        ({"person": "lilei"}, ID_NUMBER, "The face does not match the photo of the ID record."),
        ({"person": "meimei", "live": False}, ID_NUMBER, "The liveness check did not pass."),
        ({"person": "meimei"}, "110105198001011238", "No ID record matches this name and ID number"),
    ],
)
async def test_final_failures(fake_tencent, note, video, id_number, expected):
    async with tencent_bot(fake_tencent) as bot:
        await bot.send("/verify")
        await bot.send(f"{NAME} {id_number}")
        video = dict(video)
        fake_tencent.set_video(note, video.pop("person"), says=fake_tencent.codes_issued[-1], **video)
        text = Harness.text(await send_note(bot, note))
        assert text.startswith("❌ Real-name verification failed.") and expected in text
        assert "try again in" not in text
        assert rows(bot)[0][0] == "failed"


async def test_provider_down_tells_the_user_and_the_admins(fake_tencent, note):
    async with tencent_bot(fake_tencent) as bot:
        code = await code_after_identity(bot, fake_tencent)
        fake_tencent.set_video(note, "meimei", says=code)
        fake_tencent.inject("InternalError", times=2, action="LivenessRecognition")
        text = Harness.text(await send_note(bot, note))
        assert "cannot be reached right now" in text and "admins have been told" in text
        sent_to_admin = [r.text for chat, r in bot.transport.sent if chat == ADMIN]
        assert len(sent_to_admin) == 1 and "InternalError" in sent_to_admin[0]
        assert rows(bot) == []  # no verdict


async def test_no_code_when_the_provider_is_down_and_cancel_ends_the_step(fake_tencent, note):
    async with tencent_bot(fake_tencent) as bot:
        await bot.send("/verify")
        fake_tencent.inject("InternalError", times=2, action="GetLiveCode")
        text = Harness.text(await bot.send(f"{NAME} {ID_NUMBER}"))
        assert "could not give you a code" in text
        assert [r.text for chat, r in bot.transport.sent if chat == ADMIN]  # the admins are told
        code = await code_after_identity(bot, fake_tencent)
        assert Harness.text(await bot.send("/cancel")).startswith("Cancelled.")
        fake_tencent.set_video(note, "meimei", says=code)
        after = Harness.text(await send_note(bot, note))
        assert after == bot.app.catalogue.text("en", "error.animation")  # no step waits any more
        assert fake_tencent.count("LivenessRecognition") == 0


async def test_not_configured_says_so_before_asking(fake_tencent):
    overrides = {"plugins": {"realname": {"method": "video_note", "provider": "tencent"}}}
    async with Harness(overrides) as bot:
        text = Harness.text(await bot.send("/verify"))
    assert "not set up" in text and ASK not in text


def test_config_rules():
    with pytest.raises(ConfigError, match="video_note needs provider tencent or baidu"):
        Harness({"plugins": {"realname": {"method": "video_note", "provider": "webank"}}})
    with pytest.raises(ConfigError, match="tencent works with method: video_note"):
        Harness({"plugins": {"realname": {"provider": "tencent"}}})
    bot = Harness({"plugins": {"realname": {"method": "video_note", "provider": "baidu"}}})  # no plan_id needed
    assert bot.config["plugins"]["realname"]["min_sim"] == 70


# -- Baidu ------------------------------------------------------------------------------------------------


async def test_baidu_passed(fake_baidu, note):
    async with baidu_bot(fake_baidu) as bot:
        code = await code_after_identity(bot, fake_baidu)
        fake_baidu.set_video(note, "meimei", says=code)
        text = Harness.text(await send_note(bot, note))
        assert text.startswith("✅") and "韩*" in text and "Face similarity: 92.5 / 100" in text
        assert rows(bot) == [("passed", "baidu-note", 92.5)]
        assert fake_baidu.count(fake_baidu_path("person")) == 1


def fake_baidu_path(which: str) -> str:
    from tests.fakes.baidu import LIVENESS_PREFIX, PERSON_VERIFY_PATH

    return PERSON_VERIFY_PATH if which == "person" else LIVENESS_PREFIX + which


@pytest.mark.parametrize(
    ("video", "expected", "retry"),
    [
        ({"person": "meimei", "says": "x"}, "The code was not read clearly enough", True),
        ({"person": "meimei", "faces": 2}, "More than one face", True),
        ({"person": "meimei", "live": False}, "The liveness check did not pass.", False),
        ({"person": "lilei"}, "The face does not match the photo of the ID record.", False),
    ],
)
async def test_baidu_failures(fake_baidu, note, video, expected, retry):
    async with baidu_bot(fake_baidu) as bot:
        code = await code_after_identity(bot, fake_baidu)
        video = dict(video)
        video.setdefault("says", code)
        fake_baidu.set_video(note, video.pop("person"), **video)
        text = Harness.text(await send_note(bot, note))
        assert expected in text
        if retry:
            assert fake_baidu.session_codes[-1] in text and rows(bot) == []
        else:
            assert text.startswith("❌") and rows(bot)[0][0] == "failed"


async def test_baidu_identity_unknown(fake_baidu, note):
    async with baidu_bot(fake_baidu) as bot:
        await bot.send("/verify")
        await bot.send(f"李雷 {ID_NUMBER}")
        fake_baidu.set_video(note, "meimei", says=fake_baidu.session_codes[-1])
        text = Harness.text(await send_note(bot, note))
        assert text.startswith("❌") and "No ID record matches" in text


def test_provider_objects_describe_their_rule():
    assert "Sim ≥ 75" in TencentNotes(object(), min_sim=75).describe()
    assert "frr_1e-2" in BaiduNotes(object(), liveness_threshold="frr_1e-2").describe()


# -- the console ------------------------------------------------------------------------------------------


def test_the_console_sends_a_video_file_as_a_note(tmp_path, note):
    from core.console.terminal import parse_line
    from core.contract.chat import User

    path = tmp_path / "me.mp4"
    path.write_bytes(note)
    incoming = parse_line(str(path), User(1), Chat(1), [], 20)
    assert isinstance(incoming, Incoming) and incoming.video is not None
    assert incoming.video.kind == "video_note" and incoming.video.size == len(note) and incoming.photos == []
    assert incoming.error == "error.animation"  # what it says when no step waits for a note
    assert parse_line(str(path).replace("me.mp4", "x.png"), User(1), Chat(1), [], 20).startswith("no such file")


def test_the_console_verifies_with_a_video_file(tmp_path, fake_tencent, note):
    from tests.test_console import console

    fake_tencent.add_person(ID_NUMBER, NAME, "meimei")
    fake_tencent.next_codes = ["4821"]
    fake_tencent.set_video(note, "meimei", says="4821")
    (tmp_path / "me.mp4").write_bytes(note)
    config = (
        "providers:\n  tencent:\n"
        f"    secret_id: {fake_tencent.secret_id}\n    secret_key: {fake_tencent.secret_key}\n"
        f"    endpoint: {fake_tencent.endpoint}\n"
        "plugins:\n  realname: {method: video_note, provider: tencent}\n"
    )
    done = console(tmp_path, f"/verify\n{NAME} {ID_NUMBER}\n{tmp_path / 'me.mp4'}\n", config)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert ASK in out and "4821" in out and "✅ Real-name verification passed." in out, out
    assert "Name: 韩*" in out and "ID number: 110***********002X" in out
    assert fake_tencent.count("LivenessRecognition") == 1
