"""Deep-link payloads and callback data: packed in one place, within Telegram's limits, forgeries refused."""

import pytest

from core.contract.codec import Codec, Packed


@pytest.fixture
def codec():
    return Codec.for_token("123:ABC")


SIGNED = {"admin": True, "ask": False, "verify": False}


@pytest.mark.parametrize("command", ["ask", "admin"])
def test_a_button_press_comes_back_to_its_command_with_its_data(codec, command):
    raw = codec.callback(command, "c:abc:def", signed=SIGNED[command])
    assert len(raw.encode()) <= 64
    assert codec.open_callback(raw, SIGNED) == Packed(command, "c:abc:def")


def test_unsigned_callback_data_is_plain(codec):
    assert codec.callback("ask", "yes") == "ask:yes"


@pytest.mark.parametrize("forge", ["admin:grant:AAAAAAAA", "admin:grant", "nope:x", "", ":::", "verify"])
def test_forged_malformed_or_unknown_callback_data_is_refused(codec, forge):
    assert codec.open_callback(forge, SIGNED) is None


def test_altered_signed_callback_data_is_refused(codec):
    raw = codec.callback("admin", "grant-7", signed=True)
    assert codec.open_callback(raw.replace("7", "8"), SIGNED) is None
    assert Codec.for_token("other:TOKEN").open_callback(raw, SIGNED) is None


def test_callback_data_over_64_bytes_is_refused_when_packed(codec):
    with pytest.raises(ValueError, match="over"):
        codec.callback("facematch", "x" * 60)


def test_the_same_token_gives_the_same_key_across_restarts():
    raw = Codec.for_token("123:ABC").callback("admin", "yes", signed=True)
    assert Codec.for_token("123:ABC").open_callback(raw, SIGNED) == Packed("admin", "yes")


def test_unsigned_deep_links_round_trip_and_keep_dashes(codec):
    raw = codec.deep_link("ask", "abc-1")
    assert raw == "ask-abc-1"
    assert codec.open_deep_link(raw, {"ask": False}) == Packed("ask", "abc-1")


def test_signed_deep_links_refuse_a_payload_the_bot_did_not_issue(codec):
    raw = codec.deep_link("admin", "grant-7", signed=True)
    assert codec.open_deep_link(raw, {"admin": True}) == Packed("admin", "grant-7")
    assert codec.open_deep_link("admin-grant-8", {"admin": True}) is None
    assert codec.open_deep_link(raw.replace("7", "8"), {"admin": True}) is None


@pytest.mark.parametrize("raw", ["nope-x", "ask", "admin-" + "x" * 70, "admin-a b", "admin-é"])
def test_unknown_malformed_or_forged_deep_links_are_refused(codec, raw):
    assert codec.open_deep_link(raw, {"ask": False, "admin": True}) is None


def test_an_unsigned_command_gets_any_payload_typed_to_it_and_checks_it_itself(codec):
    assert codec.open_deep_link("ask-a b!", {"ask": False}) == Packed("ask", "a b!")


@pytest.mark.parametrize("payload", ["a b", "x" * 60, "ü"])
def test_deep_link_payloads_outside_telegrams_rules_are_refused_when_packed(codec, payload):
    with pytest.raises(ValueError):
        codec.deep_link("verify", payload)
