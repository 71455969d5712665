"""The Tencent Cloud FaceID (API 3.0) client: TC3 signatures (checked against Tencent's official SDK), the fake's
refusals, GetLiveCode and LivenessRecognition outcomes, error mapping, redaction."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
import requests

from core.contract.errors import (
    ProviderError,
    ProviderMisconfigured,
    QuotaExhausted,
    RateLimited,
    TemporarilyUnavailable,
)
from core.infra.http import HttpSettings
from core.providers import make_client
from core.providers.tencent import (
    CONTENT_TYPE,
    TencentFaceId,
    classify,
    tc3_authorization,
)
from tests.fakes.tencent import FakeTencent
from tests.videos import video_note

FAST = HttpSettings(connect_timeout=2, read_timeout=5, retries=2, backoff=0.01)
ID_CARD = "11010519491231002X"
NAME = "韩梅梅"


@pytest.fixture(scope="module")
def note() -> bytes:
    return video_note(2.0, seed=1)


@pytest.fixture
def fake(note: bytes):
    server = FakeTencent().start()
    server.add_person(ID_CARD, NAME, "meimei")
    yield server
    server.stop()


def client_of(server: FakeTencent, **kwargs) -> TencentFaceId:
    kwargs.setdefault("http", FAST)
    return TencentFaceId(
        server.secret_id, kwargs.pop("secret_key", server.secret_key), endpoint=server.endpoint, **kwargs
    )


# -- the signature -------------------------------------------------------------------------------------


def sdk_authorization(monkeypatch, secret_id: str, secret_key: str, host: str, action: str, params: dict, ts: int):
    """What Tencent's official SDK (tencentcloud-sdk-python-common) puts in ``Authorization`` and the body it
    signs, for the same request at the same time."""
    from tencentcloud.common import abstract_client, credential
    from tencentcloud.common.http.request import RequestInternal
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile

    class FaceIdClient(abstract_client.AbstractClient):
        _apiVersion = "2018-03-01"
        _endpoint = host
        _service = "faceid"

    monkeypatch.setattr(abstract_client.time, "time", lambda: ts)
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=host))
    client = FaceIdClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)
    req = RequestInternal(host, "POST", "/")
    client._build_req_with_tc3_signature(action, params, req)
    return req.header["Authorization"], req.header["Content-Type"], req.data


@pytest.mark.parametrize(
    ("action", "params", "ts"),
    [
        ("GetLiveCode", {}, 1551113065),
        ("LivenessRecognition", {"IdCard": ID_CARD, "Name": "Han Meimei", "LivenessType": "LIP"}, 1766000000),
        ("LivenessRecognition", {"VideoBase64": base64.b64encode(b"\x00" * 999).decode()}, 1700000000 - 7),
    ],
)
def test_signature_matches_the_official_sdk(monkeypatch, action, params, ts):
    secret_id, secret_key = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
    host = "faceid.tencentcloudapi.com"
    sdk, content_type, body = sdk_authorization(monkeypatch, secret_id, secret_key, host, action, params, ts)
    ours = tc3_authorization(secret_id, secret_key, host, body.encode(), ts, content_type=content_type)
    assert ours == sdk
    assert sdk.startswith(f"TC3-HMAC-SHA256 Credential={secret_id}/")
    # and a different body, key or time gives a different signature
    assert tc3_authorization(secret_id, secret_key, host, body.encode() + b" ", ts, content_type=content_type) != sdk
    assert tc3_authorization(secret_id, secret_key + "x", host, body.encode(), ts, content_type=content_type) != sdk
    assert tc3_authorization(secret_id, secret_key, host, body.encode(), ts + 1, content_type=content_type) != sdk


def test_the_fake_refuses_wrong_and_stale_signatures(fake: FakeTencent):
    body = b"{}"
    now = int(time.time())

    def post(authorization: str, timestamp: int, sent: bytes = body) -> dict:
        headers = {
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": "GetLiveCode",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": "2018-03-01",
            "X-TC-Region": "ap-guangzhou",
            "Authorization": authorization,
        }
        answer = requests.post(fake.endpoint + "/", data=sent, headers=headers, timeout=5)
        assert answer.status_code == 200
        return answer.json()["Response"]

    good = tc3_authorization(fake.secret_id, fake.secret_key, fake.host, body, now)
    assert "LiveCode" in post(good, now)
    wrong_key = tc3_authorization(fake.secret_id, "another-key", fake.host, body, now)
    assert post(wrong_key, now)["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert post(good, now, b'{"x":1}')["Error"]["Code"] == "AuthFailure.SignatureFailure"  # body changed
    unknown = tc3_authorization("AKIDnobody", fake.secret_key, fake.host, body, now)
    assert post(unknown, now)["Error"]["Code"] == "AuthFailure.SecretIdNotFound"
    stale = tc3_authorization(fake.secret_id, fake.secret_key, fake.host, body, now - 301)
    assert post(stale, now - 301)["Error"]["Code"] == "AuthFailure.SignatureExpire"
    assert post("", now)["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    answer = post(wrong_key, now)
    assert set(answer) == {"Error", "RequestId"} and set(answer["Error"]) == {"Code", "Message"}


def test_client_errors_for_bad_credentials_and_clock(fake: FakeTencent):
    with pytest.raises(ProviderMisconfigured) as err:
        client_of(fake, secret_key="wrong-secret-key-000").get_live_code()
    assert err.value.code == "AuthFailure.SignatureFailure" and "secret_key" in err.value.detail
    assert isinstance(err.value, ProviderMisconfigured)
    with pytest.raises(ProviderMisconfigured) as err:
        TencentFaceId("AKIDnobody000", fake.secret_key, endpoint=fake.endpoint, http=FAST).get_live_code()
    assert err.value.code == "AuthFailure.SecretIdNotFound" and "secret_id" in err.value.detail
    with pytest.raises(ProviderMisconfigured) as err:
        client_of(fake, clock=lambda: time.time() - 400).get_live_code()
    assert err.value.code == "AuthFailure.SignatureExpire" and "clock" in err.value.detail
    assert client_of(fake, clock=lambda: time.time() - 200).get_live_code().isdigit()  # within 5 minutes


# -- the actions ---------------------------------------------------------------------------------------


def test_live_code_then_liveness_success(fake: FakeTencent, note: bytes):
    client = client_of(fake)
    code = client.get_live_code()
    assert code.isdigit() and len(code) == 4
    fake.set_video(note, "meimei", says=code)
    check = client.liveness_recognition(ID_CARD, NAME, note, code)
    assert check.success and check.reason == "" and check.sim == fake.same_sim
    assert check.best_frame and check.best_frame[:2] == b"\xff\xd8"
    assert check.request_id
    assert "best_frame" not in repr(check) and "\\xff" not in repr(check)
    assert fake.seen[-1] == {"LivenessType": "LIP", "ValidateData": code, "size": len(base64.b64encode(note))}


@pytest.mark.parametrize(
    ("video", "id_card", "name", "result", "reason"),
    [
        ({"person": "meimei", "says": "0000"}, ID_CARD, NAME, "FailedOperation.LipVoiceRecognize", "code"),
        ({"person": None}, ID_CARD, NAME, "FailedOperation.LifePhotoDetectNoFaces", "no_face"),
        ({"person": "meimei", "faces": 2}, ID_CARD, NAME, "FailedOperation.LifePhotoDetectFaces", "faces"),
        ({"person": "meimei", "dark": True}, ID_CARD, NAME, "FailedOperation.ActionLightDark", "quality"),
        ({"person": "meimei", "live": False}, ID_CARD, NAME, "FailedOperation.LivessDetectFake", "liveness"),
        ({"person": "lilei"}, ID_CARD, NAME, "FailedOperation.CompareLowSimilarity", "mismatch"),
        ({"person": "meimei"}, "110105198001011238", NAME, "FailedOperation.IdNoExistSystem", "identity"),
        ({"person": "meimei"}, ID_CARD, "李雷", "FailedOperation.IdNameMisMatch", "identity"),
    ],
)
def test_liveness_failures_are_outcomes(fake, note, video, id_card, name, result, reason):
    client = client_of(fake)
    code = client.get_live_code()
    video = dict(video)
    video.setdefault("says", code)
    fake.set_video(note, video.pop("person"), **video)
    check = client.liveness_recognition(id_card, name, note, code)
    assert not check.success and check.result == result and check.reason == reason and check.sim is None


def test_not_a_video_and_too_large(fake: FakeTencent):
    client = client_of(fake)
    code = client.get_live_code()
    assert client.liveness_recognition(ID_CARD, NAME, b"GIF89a not a video", code).reason == "video"
    before = fake.count("LivenessRecognition")
    with pytest.raises(ProviderError) as err:
        client.liveness_recognition(ID_CARD, NAME, b"\x00" * (6 * 1024 * 1024 + 1), code)
    assert err.value.code == "too_large"
    assert fake.count("LivenessRecognition") == before  # refused before any call


def test_rate_limit_and_internal_errors_are_retried(fake: FakeTencent):
    client = client_of(fake)
    fake.inject("RequestLimitExceeded", times=2, action="GetLiveCode")
    assert client.get_live_code().isdigit()
    assert fake.count("GetLiveCode") == 3
    fake.inject("RequestLimitExceeded", times=3, action="GetLiveCode")
    with pytest.raises(RateLimited) as err:
        client.get_live_code()
    assert isinstance(err.value, RateLimited)
    fake.inject("InternalError", times=3)
    with pytest.raises(TemporarilyUnavailable):
        client.get_live_code()
    fake.inject("FailedOperation.LivessSystemError", times=1)
    assert client.get_live_code().isdigit()


def test_transport_failures(fake: FakeTencent):
    client = client_of(fake)
    fake.inject(http_status=502, times=3)
    with pytest.raises(TemporarilyUnavailable) as err:
        client.get_live_code()
    assert isinstance(err.value, TemporarilyUnavailable)
    fake.inject(garbage=True)
    with pytest.raises(TemporarilyUnavailable) as err:
        client.get_live_code()
    assert err.value.code == "not_json"
    fake.inject(stall=1.0)
    with pytest.raises(TemporarilyUnavailable) as err:
        client_of(fake, http=HttpSettings(connect_timeout=1, read_timeout=0.3, retries=0)).get_live_code()
    assert err.value.code in ("ReadTimeout", "ConnectionError")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UnauthorizedOperation.Nonactivated", ProviderMisconfigured),
        ("UnauthorizedOperation.Arrears", QuotaExhausted),
        ("ResourceInsufficient", QuotaExhausted),
        ("InvalidAction", ProviderMisconfigured),
        ("InvalidParameterValue", ProviderError),
    ],
)
def test_error_kinds(fake: FakeTencent, code, kind):
    fake.inject(code)
    with pytest.raises(kind) as err:
        client_of(fake).get_live_code()
    assert err.value.code == code and err.value.vendor == "tencent" and type(err.value) is kind
    assert classify(code) is kind
    if kind is QuotaExhausted:
        assert isinstance(err.value, QuotaExhausted)


def test_config_and_registry(fake: FakeTencent):
    config = {"providers": {"tencent": fake.provider_config()}, "http": {"retries": 0}, "workers": {"io": 2}}
    client = make_client("tencent", config, None)
    assert isinstance(client, TencentFaceId) and client.get_live_code().isdigit()
    assert make_client("tencent", {"providers": {"tencent": {"secret_id": "", "secret_key": ""}}}, None) is None
    assert fake.secret_key not in repr(client) and fake.secret_id not in repr(client)

    from core.runtime.config import validate

    checked = validate({"providers": {"tencent": {"secret_id": "AKIDx1234", "secret_key": "k1234567"}}})
    assert checked["providers"]["tencent"]["endpoint"] == "https://faceid.tencentcloudapi.com"
    assert checked["providers"]["tencent"]["region"] == "ap-guangzhou"


def test_nothing_secret_or_personal_in_the_log(fake: FakeTencent, note: bytes, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_of(fake)
    code = client.get_live_code()
    fake.set_video(note, "meimei", says="9999")
    client.liveness_recognition(ID_CARD, NAME, note, code)
    fake.inject("InternalError", times=1)
    client.get_live_code()
    with pytest.raises(ProviderMisconfigured) as err:
        client_of(fake, secret_key="wrong-secret-key-000").get_live_code()
    text = caplog.text + err.value.detail + str(err.value)
    encoded = base64.b64encode(note).decode()
    for secret in (fake.secret_key, "wrong-secret-key-000", fake.secret_id, ID_CARD, NAME, encoded[:64]):
        assert secret not in text
    assert "RequestId" in caplog.text  # the request id is what is logged
    assert json.dumps(NAME, ensure_ascii=False) not in text
