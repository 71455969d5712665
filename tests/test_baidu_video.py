"""Baidu video liveness (``faceliveness/sessioncode`` + ``faceliveness/verify``) and person verification
(``face/v3/person/verify``) through the one Baidu client: token service, QPS limiter, error shapes."""

from __future__ import annotations

import base64
import logging

import pytest

from core.contract.errors import NoFace, ProviderError, TemporarilyUnavailable
from core.infra.http import HttpSettings
from core.infra.tokens import TokenService
from core.providers.baidu import BaiduClient
from tests.fakes.baidu import LIVENESS_PREFIX, PERSON_VERIFY_PATH, TOKEN_PATH, FakeBaidu
from tests.videos import video_note

ID_CARD = "11010519491231002X"
NAME = "韩梅梅"
FAST = HttpSettings(connect_timeout=2, read_timeout=5, retries=2, backoff=0.01)


@pytest.fixture(scope="module")
def note() -> bytes:
    return video_note(2.0, seed=7)


@pytest.fixture
def client(fake_baidu: FakeBaidu):
    fake_baidu.add_person(ID_CARD, NAME, "meimei")
    c = BaiduClient(fake_baidu.api_key, fake_baidu.secret_key, endpoint=fake_baidu.endpoint, http=FAST,
                    tokens=TokenService(), qps=50)  # fmt: skip
    yield c
    c.close()


def test_session_code_video_and_person_verify(fake_baidu: FakeBaidu, client: BaiduClient, note: bytes):
    session = client.liveness_session_code()
    assert session.code.isdigit() and len(session.code) == 4
    assert session.code not in repr(session) and session.session_id not in repr(session)
    fake_baidu.set_video(note, "meimei", says=session.code)
    liveness = client.video_liveness(session.session_id, note)
    assert liveness.score == fake_baidu.live_score
    assert liveness.thresholds == {"frr_1e-4": 0.05, "frr_1e-3": 0.3, "frr_1e-2": 0.9}
    assert liveness.code_create == liveness.code_identify == session.code
    assert liveness.best_frame and liveness.best_frame[:2] == b"\xff\xd8" and liveness.frames == 1
    assert "best_frame" not in repr(liveness)
    assert fake_baidu.last_params[LIVENESS_PREFIX + "verify"] == {"session_id": session.session_id}
    assert client.person_verify(liveness.best_frame, ID_CARD, NAME) == fake_baidu.same_score
    assert fake_baidu.count(TOKEN_PATH) == 1  # the one token for all three


def test_what_the_video_shows(fake_baidu: FakeBaidu, client: BaiduClient, note: bytes):
    session = client.liveness_session_code()
    fake_baidu.set_video(note, "meimei", says="1")  # the wrong digits: Baidu reports what it heard
    liveness = client.video_liveness(session.session_id, note)
    assert liveness.code_identify == "1" != liveness.code_create
    fake_baidu.set_video(note, "meimei", says=session.code, live=False)
    assert client.video_liveness(session.session_id, note).score == fake_baidu.fake_score
    fake_baidu.set_video(note, None)
    with pytest.raises(ProviderError) as err:
        client.video_liveness(session.session_id, note)
    assert err.value.code == 216501
    fake_baidu.set_video(note, "meimei", faces=2)
    with pytest.raises(ProviderError) as err:
        client.video_liveness(session.session_id, note)
    assert err.value.code == 216507
    with pytest.raises(ProviderError) as err:
        client.video_liveness(session.session_id, b"GIF89a definitely not a video")
    assert err.value.code == 216508
    with pytest.raises(ProviderError) as err:
        client.video_liveness("S-unknown-session", note)
    assert err.value.code == 216502
    fake_baidu.session_lifetime = 0.0
    with pytest.raises(ProviderError) as err:
        client.video_liveness(session.session_id, note)
    assert err.value.code == 216502


def test_person_verify_refusals(fake_baidu: FakeBaidu, client: BaiduClient):
    frame = fake_baidu.frame_of("lilei")
    assert client.person_verify(frame, ID_CARD, NAME) == fake_baidu.different_score
    with pytest.raises(ProviderError) as err:
        client.person_verify(frame, "110105198001011238", NAME)
    assert err.value.code == 222351
    with pytest.raises(ProviderError) as err:
        client.person_verify(frame, ID_CARD, "李雷")
    assert err.value.code == 222351
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (255, 255, 255)).save(blank, "JPEG")
    with pytest.raises(NoFace):
        client.person_verify(blank.getvalue(), ID_CARD, NAME)


def test_limits_retries_and_errors(fake_baidu: FakeBaidu, client: BaiduClient):
    before = fake_baidu.count(LIVENESS_PREFIX + "verify")
    with pytest.raises(ProviderError) as err:
        client.video_liveness("S1", b"\x00" * (8 * 1024 * 1024))
    assert err.value.code == "too_large"
    assert fake_baidu.count(LIVENESS_PREFIX + "verify") == before  # refused before any call
    fake_baidu.inject(216505, times=2, path=LIVENESS_PREFIX)  # Baidu's session store hiccups: retried
    assert client.liveness_session_code().code.isdigit()
    fake_baidu.inject(http_status=502, times=3, path=LIVENESS_PREFIX)
    with pytest.raises(TemporarilyUnavailable):
        client.liveness_session_code()
    fake_baidu.inject(110, path=PERSON_VERIFY_PATH)  # a revoked token: refreshed and retried once
    assert client.person_verify(fake_baidu.frame_of("meimei"), ID_CARD, NAME) == fake_baidu.same_score


def test_qps_limiter_counts_these_calls(fake_baidu: FakeBaidu, note: bytes):
    fake_baidu.qps_cap = 5
    client = BaiduClient(fake_baidu.api_key, fake_baidu.secret_key, endpoint=fake_baidu.endpoint, http=FAST,
                         tokens=TokenService(), qps=5)  # fmt: skip
    for _ in range(8):
        client.liveness_session_code()
    assert fake_baidu.errors_sent[18] == 0  # queued by the client, never refused by the provider


def test_no_video_name_or_number_in_the_log(fake_baidu: FakeBaidu, client: BaiduClient, note: bytes, caplog):
    caplog.set_level(logging.DEBUG)
    session = client.liveness_session_code()
    fake_baidu.set_video(note, "meimei", says=session.code)
    liveness = client.video_liveness(session.session_id, note)
    client.person_verify(liveness.best_frame or b"", ID_CARD, NAME)
    fake_baidu.inject(222351, path=PERSON_VERIFY_PATH)
    with pytest.raises(ProviderError) as err:
        client.person_verify(liveness.best_frame or b"", ID_CARD, NAME)
    text = caplog.text + err.value.detail
    for value in (ID_CARD, NAME, base64.b64encode(note).decode()[:64], fake_baidu.secret_key):
        assert value not in text
