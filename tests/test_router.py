"""What a user sees from the router: commands, photo routing, albums, buttons, deep links, access, quotas."""

import logging

import pytest

from tests import probe_plugin
from tests.harness import Harness

ADMIN = 42
PNG = b"\x89PNG fake bytes"


def bot(**overrides) -> Harness:
    config = {"plugins": {"probe": {}}, "access": {"admins": [ADMIN]}}
    config.update(overrides)
    return Harness(config, extra_plugins={"probe": probe_plugin})


async def test_help_lists_the_enabled_plugins_commands_but_not_admin_ones():
    async with bot() as b:
        text = Harness.text(await b.send("/help"))
    assert "/echo — Echo the arguments" in text
    assert "/snap" in text
    assert "/secret" not in text
    assert "/plugins" not in text


async def test_admin_sees_admin_commands_in_help_and_plugins_list():
    async with bot() as b:
        help_text = Harness.text(await b.send("/help", user_id=ADMIN))
        plugins_text = Harness.text(await b.send("/plugins", user_id=ADMIN))
    assert "/secret" in help_text
    assert "/plugins" in help_text
    assert "probe" in plugins_text and "greeting hi" in plugins_text and "/echo" in plugins_text


async def test_help_is_in_chinese_for_a_chinese_user():
    async with bot() as b:
        text = Harness.text(await b.send("/help", language="zh"))
    assert "命令" in text and "回显参数" in text


async def test_plugin_config_reaches_the_plugin():
    async with bot(plugins={"probe": {"greeting": "hello"}}) as b:
        assert Harness.text(await b.send("/echo a b")) == "hello a b"


async def test_unknown_command_is_answered_politely():
    async with bot() as b:
        assert "I don't know /nope" in Harness.text(await b.send("/nope"))


async def test_command_addressed_to_the_bot_by_name_works_in_groups():
    async with bot() as b:
        assert Harness.text(await b.send("/echo@aipbot_test_bot x", chat_id=-5, chat_type="group")) == "hi x"


async def test_admin_only_command_is_refused_to_others_and_works_for_admins():
    async with bot() as b:
        refused = Harness.text(await b.send("/secret"))
        allowed = Harness.text(await b.send("/secret", user_id=ADMIN))
    assert "for the bot's admins only" in refused and "secret" not in refused.replace("/secret", "")
    assert allowed == "the secret"


async def test_plugins_list_is_refused_to_non_admins():
    async with bot() as b:
        assert "admins only" in Harness.text(await b.send("/plugins"))


async def test_photo_with_command_caption_goes_to_that_command():
    async with bot() as b:
        assert Harness.text(await b.send("/snap x", photos=[PNG])) == f"snap got 1 photos [{len(PNG)}] args=['x']"


async def test_command_first_then_photo_goes_to_the_pending_command_with_its_arguments():
    async with bot() as b:
        prompt = Harness.text(await b.send("/snap en"))
        answer = Harness.text(await b.send(photos=[PNG]))
    assert prompt == "Now send the photo."
    assert answer == f"snap got 1 photos [{len(PNG)}] args=['en']"


async def test_plugin_prompt_text_replaces_the_generic_one():
    async with bot() as b:
        assert Harness.text(await b.send("/pair")) == "Send the two photos."


async def test_pending_command_expires():
    async with bot(pending_minutes=1) as b:
        await b.send("/snap")
        state = b.app.services.state
        now = state.clock()
        state.clock = lambda: now + 61
        answer = Harness.text(await b.send(photos=[PNG]))
    assert "What should I do with this photo?" in answer


async def test_pending_command_is_per_user_in_a_group():
    async with bot() as b:
        await b.send("/snap", user_id=1, chat_id=-7, chat_type="group")
        other = Harness.text(await b.send(photos=[PNG], user_id=2, chat_id=-7, chat_type="group"))
        mine = Harness.text(await b.send(photos=[PNG], user_id=1, chat_id=-7, chat_type="group"))
    assert "What should I do" in other
    assert mine.startswith("snap got 1")


async def test_photo_without_command_uses_default_photo_command():
    async with bot(default_photo_command="snap") as b:
        assert Harness.text(await b.send(photos=[PNG])).startswith("snap got 1 photos")


async def test_default_photo_command_must_be_an_enabled_photo_command():
    from core.runtime.config import ConfigError

    with pytest.raises(ConfigError, match=r"^default_photo_command: no enabled photo command /echo"):
        bot(default_photo_command="echo")


async def test_photo_without_command_asks_with_buttons_and_the_choice_gets_the_photo():
    async with bot() as b:
        [question] = await b.send(photos=[PNG, PNG])
        assert question.text == "What should I do with this photo?"
        labels = [row[0].text for row in question.buttons]
        assert labels == ["Count photos", "Take two photos"]
        answer = Harness.text(await b.press(question.buttons[0][0]))
        again = Harness.text(await b.press(question.buttons[0][0]))
    assert answer == f"snap got 2 photos [{len(PNG)}, {len(PNG)}] args=[]"
    assert "no longer here" in again


async def test_album_arrives_whole_and_is_cut_to_what_the_command_takes():
    async with bot() as b:
        replies = await b.send("/snap", photos=[b"1", b"22", b"333", b"4444"])
    assert replies[0].text == "You sent 4 images; I'll use the first 3."
    assert replies[1].text == "snap got 3 photos [1, 2, 3] args=[]"


async def test_photo_pair_one_after_another_and_cancel_drops_the_first():
    async with bot() as b:
        assert Harness.text(await b.send("/pair", photos=[PNG])) == "pair got the first photo"
        assert Harness.text(await b.send(photos=[PNG])) == "pair got 2 photos"
        await b.send("/pair", photos=[PNG])
        assert Harness.text(await b.send("/cancel")) == "Cancelled. I'm not waiting for anything now."
        assert "What should I do" in Harness.text(await b.send(photos=[PNG]))


async def test_button_press_reaches_the_plugin_that_issued_it():
    async with bot() as b:
        choose, _link = await b.send("/ask")
        answer = Harness.text(await b.press(choose.buttons[0][0], user_id=1))
    assert choose.buttons[0][0].callback_data == "ask:yes"
    assert answer == "pressed yes by 1"


async def test_deep_link_reaches_the_plugin_that_issued_it():
    async with bot() as b:
        _, link = await b.send("/ask")
        assert link.text == "link https://t.me/aipbot_test_bot?start=ask-abc-1"
        answer = Harness.text(await b.send("/start ask-abc-1", user_id=9))
    assert answer == "deep link abc-1 for 9"


async def test_start_with_an_unknown_payload_just_greets():
    async with bot() as b:
        text = Harness.text(await b.send("/start nothing-here"))
    assert text.startswith("Hello Ada!") and "/echo" in text


async def test_allowed_users_keeps_strangers_out_politely():
    async with bot(access={"admins": [ADMIN], "allowed_users": [5]}) as b:
        stranger = Harness.text(await b.send("/echo", user_id=6))
        member = Harness.text(await b.send("/echo", user_id=5))
        admin = Harness.text(await b.send("/echo", user_id=ADMIN))
    assert "this bot is private" in stranger
    assert member == "hi" and admin == "hi"


async def test_daily_quota_per_user_and_command_with_a_clear_message():
    async with bot(access={"admins": [ADMIN], "daily_quota": {"snap": 2}}) as b:
        for _ in range(2):
            assert Harness.text(await b.send("/snap", photos=[PNG])).startswith("snap got")
        refused = Harness.text(await b.send("/snap", photos=[PNG]))
        other_user = Harness.text(await b.send("/snap", photos=[PNG], user_id=2))
        admin = Harness.text(await b.send("/snap", photos=[PNG], user_id=ADMIN))
        unlimited = Harness.text(await b.send("/echo"))
    assert refused == "You have used /snap 2 times today, the daily limit. Please try again tomorrow."
    assert other_user.startswith("snap got") and admin.startswith("snap got") and unlimited == "hi"


async def test_a_crash_in_a_plugin_gets_an_apology_and_a_redacted_log(caplog):
    from core.infra.redact import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.ERROR):
        async with bot() as b:
            text = Harness.text(await b.send("/boom"))
    assert text == "Sorry, something went wrong on our side. Please try again in a moment."
    assert "kaboom" in caplog.text
    assert "SHOULD-NOT-LEAK" not in caplog.text


async def test_a_user_facing_error_is_shown_in_the_users_language():
    async with bot() as b:
        en = Harness.text(await b.send("/bad"))
        zh = Harness.text(await b.send("/bad", language="zh"))
    assert en.startswith("I can't use this image.")
    assert zh.startswith("无法使用这张图片")


async def test_plain_text_gets_a_hint():
    async with bot() as b:
        assert "/help" in Harness.text(await b.send("hello there"))


async def test_photo_commands_show_typing_while_they_work():
    async with bot() as b:
        await b.send("/snap", photos=[PNG])
        assert (1, "typing") in b.transport.actions


async def test_a_command_that_asks_a_question_gets_the_next_text_and_can_delete_it():
    async with bot() as b:
        assert Harness.text(await b.send("/name")) == "what is your name?"
        answer = Harness.text(await b.send("Grace"))
        later = Harness.text(await b.send("again"))
    assert answer == f"hello Grace (message {b._message_id - 1} deleted: True)"
    assert "Send me a photo, or a command." in later


async def test_a_photo_does_not_answer_a_text_question_and_cancel_ends_it():
    async with bot() as b:
        await b.send("/name")
        assert "What should I do" in Harness.text(await b.send(photos=[PNG]))
        await b.send("/name")
        await b.send("/cancel")
        assert "Send me a photo, or a command." in Harness.text(await b.send("Grace"))


async def test_a_problem_only_an_admin_can_fix_is_sent_to_the_admins_once_an_hour():
    async with bot() as b:
        user_text = Harness.text(await b.send("/broken", user_id=5))
        await b.send("/broken", user_id=6)
        alerts = [r.text for chat, r in b.transport.sent if chat == ADMIN]
        state = b.app.services.state
        now = state.clock()
        state.clock = lambda: now + 3601
        await b.send("/broken", user_id=7)
        later = [r.text for chat, r in b.transport.sent if chat == ADMIN]
    assert user_text.startswith("This feature is not set up correctly yet")
    assert alerts == [
        "⚠️ aipbot needs its admin: /broken failed for a user. Baidu error 6 (log_id 5): enable the OCR API"
    ]
    assert len(later) == 2


async def test_continuing_a_command_does_not_count_against_the_daily_quota():
    async with bot(access={"admins": [ADMIN], "daily_quota": {"pair": 1, "name": 1}}) as b:
        assert Harness.text(await b.send("/pair", photos=[PNG])) == "pair got the first photo"
        assert Harness.text(await b.send(photos=[PNG])) == "pair got 2 photos"
        assert Harness.text(await b.send("/name")) == "what is your name?"
        assert Harness.text(await b.send("Grace")).startswith("hello Grace")
        assert "daily limit" in Harness.text(await b.send("/pair", photos=[PNG]))


async def test_a_user_over_quota_is_told_before_being_asked_for_a_photo():
    async with bot(access={"admins": [ADMIN], "daily_quota": {"snap": 1}}) as b:
        await b.send("/snap", photos=[PNG])
        assert "daily limit" in Harness.text(await b.send("/snap"))


async def test_an_admin_only_command_refuses_deep_links_from_others():
    async with bot() as b:
        refused = Harness.text(await b.send("/start secret-x", user_id=5))
        allowed = Harness.text(await b.send("/start secret-x", user_id=ADMIN))
    assert "admins only" in refused
    assert allowed == f"deep link x for {ADMIN}"


async def test_an_update_handled_again_after_a_restart_is_not_counted_twice_against_the_quota():
    from core.contract.chat import Chat, Incoming, Photo

    async with bot(access={"admins": [ADMIN], "daily_quota": {"snap": 1}}) as b:

        def snap(key: str) -> Incoming:
            return Incoming(b.user(1), Chat(1), "/snap", [Photo.from_bytes(PNG)], 7, key=key)

        first = Harness.text(await b.deliver(snap("update-1")))
        replayed = Harness.text(await b.deliver(snap("update-1")))  # the same update, replayed by the journal
        other = Harness.text(await b.deliver(snap("update-2")))
        other_again = Harness.text(await b.deliver(snap("update-2")))
    assert first.startswith("snap got 1") and replayed.startswith("snap got 1")
    assert "daily limit" in other and "daily limit" in other_again  # a refusal stays a refusal
