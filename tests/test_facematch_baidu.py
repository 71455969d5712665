"""/facematch with the Baidu engine, end to end against the fake Baidu server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from tests.fakes.baidu import MATCH_PATH, FakeBaidu
from tests.harness import Harness
from tests.test_facematch_bot import models, photo  # noqa: F401 (models: the session's dlib models, autouse)


@pytest.fixture
def baidu(fake_baidu: FakeBaidu) -> FakeBaidu:
    """The fake server, told who is in each test photo."""
    for name in ("obama_1.jpg", "obama_2.jpg"):
        fake_baidu.set_face(photo(name), "obama")
    for name in ("biden_1.jpg", "biden_2.jpg"):
        fake_baidu.set_face(photo(name), "biden")
    fake_baidu.set_face(photo("no_face.png"), None)
    return fake_baidu


def config(fake: FakeBaidu, **facematch: Any) -> dict[str, Any]:
    section = {"enabled": True, "engine": "auto", **facematch}
    return {
        "providers": {"baidu": fake.provider_config()},
        "http": {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 1, "backoff": 0.01},
        "plugins": {"facematch": section},
    }


def picture_size(reply) -> tuple[int, int]:
    assert reply.photo is not None
    with Image.open(io.BytesIO(reply.photo)) as im:
        return im.size


async def test_same_person_goes_through_face_match_v3(baidu):
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert baidu.count(MATCH_PATH) == 1
    text = replies[0].text
    assert "Similarity: 92.5 / 100 — likely the same person." in text
    assert "Compared by Baidu face match; same person from 80 up (Baidu recommends 80)." in text
    assert "whole photo" not in text  # the local detector found both faces for the crops
    assert picture_size(replies[0])[0] > 600
    sent = baidu.last_params[MATCH_PATH]["images"]
    assert [i["face_type"] for i in sent] == ["LIVE", "LIVE"]
    assert [(i["quality_control"], i["liveness_control"]) for i in sent] == [("NONE", "NONE")] * 2


async def test_different_people(baidu):
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("biden_1.jpg"), photo("obama_2.jpg")])
    assert "Similarity: 12.0 / 100 — likely different people." in replies[0].text


async def test_baidu_score_is_judged_against_the_threshold(baidu):
    baidu.same_score = 79.9
    async with Harness(config(baidu, engine="baidu")) as bot:
        replies = await bot.send("/facematch", photos=[photo("biden_1.jpg"), photo("biden_2.jpg")])
    assert "Similarity: 79.9 / 100 — likely different people." in replies[0].text


async def test_one_photo_after_the_other(baidu):
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("biden_1.jpg")])
        assert "Got the first photo" in replies[0].text
        assert baidu.count(MATCH_PATH) == 0
        replies = await bot.send(photos=[photo("biden_2.jpg")])
    assert "likely the same person" in replies[0].text
    assert baidu.count(MATCH_PATH) == 1


async def test_face_options_reach_baidu(baidu):
    options = {"face_type": "CERT", "quality_control": "NORMAL", "liveness_control": "LOW"}
    async with Harness(config(baidu, **options)) as bot:
        await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    for sent in baidu.last_params[MATCH_PATH]["images"]:
        assert (sent["face_type"], sent["quality_control"], sent["liveness_control"]) == ("CERT", "NORMAL", "LOW")


async def test_no_face_names_the_photo_when_the_local_detector_agrees(baidu):
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("no_face.png")])
    assert "couldn't find a face in the second photo" in replies[0].text
    assert baidu.errors_sent[222202] == 1


async def test_no_face_in_one_of_the_photos_when_only_baidu_knows(baidu):
    baidu.set_face(photo("obama_2.jpg"), None)  # Baidu finds none, the local detector does
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert "No face was found in one of the photos" in replies[0].text


@pytest.mark.parametrize(
    ("code", "words"),
    [(223113, "partly covered"), (223114, "blurred"), (223115, "lighting"), (223116, "cut off"), (223120, "live")],
)
async def test_quality_and_liveness_failures_are_specific(baidu, code, words):
    baidu.set_face(photo("biden_2.jpg"), "biden", error=code)
    async with Harness(config(baidu, quality_control="NORMAL", liveness_control="LOW")) as bot:
        replies = await bot.send("/facematch", photos=[photo("biden_1.jpg"), photo("biden_2.jpg")])
    assert len(replies) == 1 and words in replies[0].text
    assert replies[0].photo is None


async def test_engine_baidu_without_keys_tells_the_admin_to_configure(baidu):
    over = {"plugins": {"facematch": {"enabled": True, "engine": "baidu"}}}
    async with Harness(over) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert "not set up correctly" in replies[0].text
    assert baidu.count(MATCH_PATH) == 0


async def test_auto_without_keys_uses_the_local_engine(baidu):
    async with Harness({"plugins": {"facematch": {"enabled": True, "engine": "auto"}}}) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("obama_2.jpg")])
    assert "Compared on this server" in replies[0].text and "likely the same person" in replies[0].text
    assert baidu.count(MATCH_PATH) == 0


async def test_picture_shows_whole_photos_when_the_local_detector_finds_nothing(baidu):
    baidu.set_face(photo("blank.png"), "ghost")  # Baidu "sees" a face the local detector cannot
    async with Harness(config(baidu)) as bot:
        replies = await bot.send("/facematch", photos=[photo("blank.png"), photo("blank.png")])
    assert "likely the same person" in replies[0].text
    assert "the picture shows the whole photo" in replies[0].text
    assert picture_size(replies[0])[0] > 600


async def test_local_engine_setting_never_calls_baidu(baidu):
    async with Harness(config(baidu, engine="local")) as bot:
        replies = await bot.send("/facematch", photos=[photo("obama_1.jpg"), photo("biden_1.jpg")])
    assert "Compared on this server" in replies[0].text
    assert baidu.count(MATCH_PATH) == 0
