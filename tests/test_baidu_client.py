"""core.providers.baidu against the fake Baidu server: tokens, retries, errors, OCR, face match, faceprint."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from core.contract.errors import (
    BadImage,
    FaceQuality,
    NoFace,
    ProviderError,
    ProviderMisconfigured,
    QuotaExhausted,
    RateLimited,
    TemporarilyUnavailable,
)
from core.contract.i18n import core_catalogue
from core.infra.http import HttpSettings
from core.infra.images import FACE_LIMITS, OCR_LIMITS, prepare
from core.infra.tokens import TokenService
from core.providers.baidu import (
    BAD_IMAGE_KEYS,
    FACE_QUALITY_KEYS,
    QPS_HEADROOM,
    BaiduClient,
    RateLimiter,
    VerifyDetail,
)
from tests.fakes.baidu import MATCH_PATH, FakeBaidu
from tests.harness import assert_in_both_languages

DATA = Path(__file__).resolve().parents[1] / "examples"
OCR_PATH = "/rest/2.0/ocr/v1/general_basic"


def client_for(fake: FakeBaidu, **http: float) -> BaiduClient:
    client = BaiduClient.from_config(fake.config(http=http), tokens=TokenService())
    assert client is not None
    return client


@pytest.fixture
def receipt() -> bytes:
    return prepare((DATA / "text" / "receipt.jpg").read_bytes(), OCR_LIMITS).data


@pytest.fixture
def faces() -> dict[str, bytes]:
    return {
        name: prepare((DATA / "faces" / f"{name}.jpg").read_bytes(), FACE_LIMITS).data
        for name in ("obama_1", "obama_2", "biden_1")
    }


# -- configuration ----------------------------------------------------------------------------------


def test_from_config_is_none_without_keys(fake_baidu: FakeBaidu) -> None:
    assert BaiduClient.from_config({}) is None
    assert BaiduClient.from_config(fake_baidu.config(api_key="")) is None
    assert BaiduClient.from_config(fake_baidu.config(secret_key="")) is None
    client = BaiduClient.from_config(fake_baidu.config(http={"retries": 5}, io_workers=3), tokens=TokenService())
    assert client is not None
    assert client.http == HttpSettings(connect_timeout=2.0, read_timeout=2.0, retries=5, backoff=0.01, pool_size=3)
    assert fake_baidu.secret_key not in repr(client) and fake_baidu.api_key not in repr(client)


# -- tokens -----------------------------------------------------------------------------------------


def test_concurrent_first_calls_fetch_one_token(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu)
    results: list = []
    barrier = threading.Barrier(30)

    def call() -> None:
        barrier.wait()
        results.append(client.ocr(receipt))

    threads = [threading.Thread(target=call) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 30 and all(r.lines for r in results)
    assert fake_baidu.token_fetches == 1
    assert fake_baidu.count(OCR_PATH) == 30


def test_clients_sharing_a_token_service_share_the_token(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    tokens = TokenService()
    a = BaiduClient.from_config(fake_baidu.config(), tokens=tokens)
    b = BaiduClient.from_config(fake_baidu.config(), tokens=tokens)
    assert a is not None and b is not None
    a.ocr(receipt)
    b.ocr(receipt)
    assert fake_baidu.token_fetches == 1


@pytest.mark.parametrize("how", ["expired", "revoked", "error_100"])
def test_expired_or_revoked_token_is_refreshed_transparently(fake_baidu: FakeBaidu, receipt: bytes, how: str) -> None:
    client = client_for(fake_baidu)
    client.ocr(receipt)
    if how == "expired":
        fake_baidu.expire_tokens()
    elif how == "revoked":
        fake_baidu.revoke()
    else:
        fake_baidu.inject(100, path=OCR_PATH)
    assert client.ocr(receipt).lines
    assert fake_baidu.token_fetches == 2
    assert fake_baidu.errors_sent[{"expired": 111, "revoked": 110, "error_100": 100}[how]] == 1


def test_token_lifetime_from_expires_in(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    fake_baidu.token_lifetime = 0.3
    client = client_for(fake_baidu)
    client.ocr(receipt)
    threading.Event().wait(0.35)
    assert client.ocr(receipt).lines
    assert fake_baidu.token_fetches == 2
    assert fake_baidu.errors_sent[111] == 0  # refreshed before use, not after a rejection


def test_token_rejected_twice_is_a_misconfiguration(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu)
    fake_baidu.inject(110, times=2, path=OCR_PATH)
    with pytest.raises(ProviderMisconfigured) as info:
        client.ocr(receipt)
    assert info.value.code == 110 and info.value.vendor == "baidu"
    assert fake_baidu.count(OCR_PATH) == 2 and fake_baidu.token_fetches == 2


def test_wrong_api_key_and_wrong_secret_get_distinct_admin_messages(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    fast = HttpSettings(retries=0, backoff=0.01)
    wrong_key = BaiduClient(
        "nope-api-key", fake_baidu.secret_key, endpoint=fake_baidu.endpoint, http=fast, tokens=TokenService()
    )
    wrong_secret = BaiduClient(
        fake_baidu.api_key, "nope-secret", endpoint=fake_baidu.endpoint, http=fast, tokens=TokenService()
    )
    with pytest.raises(ProviderMisconfigured) as key_error:
        wrong_key.ocr(receipt)
    with pytest.raises(ProviderMisconfigured) as secret_error:
        wrong_secret.ocr(receipt)
    assert "API Key" in key_error.value.detail and "api_key" in key_error.value.detail
    assert "Secret Key" in secret_error.value.detail and "secret_key" in secret_error.value.detail
    assert key_error.value.detail != secret_error.value.detail
    assert key_error.value.key == secret_error.value.key == "error.misconfigured"
    for err in (key_error.value, secret_error.value):
        assert err.code == "invalid_client"
        assert "nope" not in err.detail and fake_baidu.secret_key not in err.detail
    assert fake_baidu.count(OCR_PATH) == 0


def test_token_endpoint_down_is_temporarily_unavailable(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=1)
    fake_baidu.inject(http_status=503, times=2, path="/oauth")
    with pytest.raises(TemporarilyUnavailable):
        client.ocr(receipt)
    fake_baidu.inject(garbage=True, path="/oauth")
    with pytest.raises(TemporarilyUnavailable):
        client.ocr(receipt)
    assert client.ocr(receipt).lines  # and it recovers
    assert fake_baidu.count(OCR_PATH) == 1


# -- retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [17, 19])
def test_quota_errors_are_not_retried(fake_baidu: FakeBaidu, receipt: bytes, code: int) -> None:
    client = client_for(fake_baidu)
    fake_baidu.inject(code, times=5, path=OCR_PATH)
    with pytest.raises(QuotaExhausted) as info:
        client.ocr(receipt)
    assert info.value.code == code
    assert info.value.key == ("error.provider_quota" if code == 17 else "error.provider_quota_total")
    assert fake_baidu.count(OCR_PATH) == 1


def test_daily_limit_of_the_fake_is_17(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    fake_baidu.daily_limit = 1
    client = client_for(fake_baidu)
    client.ocr(receipt)
    with pytest.raises(QuotaExhausted):
        client.ocr(receipt)


def test_qps_error_is_retried_then_succeeds(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(18, times=2, path=OCR_PATH)
    assert client.ocr(receipt).lines
    assert fake_baidu.count(OCR_PATH) == 3


def test_qps_error_after_the_retries_is_rate_limited(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(18, times=3, path=OCR_PATH)
    with pytest.raises(RateLimited) as info:
        client.ocr(receipt)
    assert info.value.code == 18
    assert fake_baidu.count(OCR_PATH) == 3


@pytest.mark.parametrize("code", [1, 2, 4, 216630, 222201, 222901])
def test_transient_codes_are_retried(fake_baidu: FakeBaidu, receipt: bytes, code: int) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(code, times=2, path=OCR_PATH)
    assert client.ocr(receipt).lines
    assert fake_baidu.count(OCR_PATH) == 3
    fake_baidu.inject(code, times=3, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as info:
        client.ocr(receipt)
    assert info.value.code == code


def test_282000_too_much_text_is_retried_once_only(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(282000, times=1, path=OCR_PATH)
    assert client.ocr(receipt).lines
    fake_baidu.reset_counters()
    fake_baidu.inject(282000, times=5, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as info:
        client.ocr(receipt)
    assert info.value.code == 282000
    assert fake_baidu.count(OCR_PATH) == 2


def test_5xx_is_retried_within_the_bound(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(http_status=502, times=2, path=OCR_PATH)
    assert client.ocr(receipt).lines
    assert fake_baidu.count(OCR_PATH) == 3
    fake_baidu.reset_counters()
    fake_baidu.inject(http_status=503, times=10, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as info:
        client.ocr(receipt)
    assert fake_baidu.count(OCR_PATH) == 3
    assert info.value.code == 503
    assert "temporarily unavailable" in info.value.user_message("en")
    assert info.value.user_message("zh") == core_catalogue().text("zh", "error.unavailable")


def test_timeouts_are_retried_within_the_bound(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=1, read_timeout=0.2)
    fake_baidu.inject(stall=1.0, times=1, path=OCR_PATH)
    assert client.ocr(receipt).lines
    fake_baidu.reset_counters()
    fake_baidu.inject(stall=1.0, times=5, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as info:
        client.ocr(receipt)
    assert fake_baidu.count(OCR_PATH) == 2
    assert "retries" in info.value.detail


def test_non_json_answers_are_retried_then_unavailable(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    client = client_for(fake_baidu, retries=2)
    fake_baidu.inject(garbage=True, times=1, path=OCR_PATH)
    assert client.ocr(receipt).lines
    fake_baidu.reset_counters()
    fake_baidu.inject(garbage=True, times=10, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as info:
        client.ocr(receipt)
    assert info.value.code == "not_json"
    assert fake_baidu.count(OCR_PATH) == 3


def test_connection_refused_is_unavailable() -> None:
    with FakeBaidu() as fake:
        endpoint = fake.endpoint
    client = BaiduClient(
        "k" * 8, "s" * 8, endpoint=endpoint, http=HttpSettings(retries=1, backoff=0.01), tokens=TokenService()
    )
    with pytest.raises(TemporarilyUnavailable):
        client.ocr(b"\xff\xd8 not really")


# -- error mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (6, ProviderMisconfigured, "enable OCR"),
        (3, ProviderMisconfigured, "endpoint"),
        (14, ProviderMisconfigured, "IAM"),
        (216201, BadImage, "216201"),
        (216202, BadImage, "216202"),
        (216101, ProviderError, "request refused"),
        (999999, ProviderError, "999999"),
    ],
)
def test_error_codes_map_to_typed_errors(
    fake_baidu: FakeBaidu, receipt: bytes, code: int, kind: type, words: str
) -> None:
    client = client_for(fake_baidu)
    fake_baidu.inject(code, path=OCR_PATH)
    with pytest.raises(kind) as info:
        client.ocr(receipt)
    assert isinstance(info.value, ProviderError) and info.value.vendor == "baidu" and info.value.code == code
    assert words in info.value.detail
    assert fake_baidu.count(OCR_PATH) == 1


def test_every_catalogue_key_the_client_uses_exists_in_both_languages() -> None:
    keys = {
        *BAD_IMAGE_KEYS.values(),
        *FACE_QUALITY_KEYS.values(),
        "error.face_quality",
        "error.provider_quota_total",
        "error.provider_request",
        "error.image_not_image",
    }
    assert_in_both_languages(keys)


def test_bad_inputs_fail_before_any_network_call(fake_baidu: FakeBaidu) -> None:
    client = client_for(fake_baidu)
    for name in ("tiny.png", "truncated.jpg", "not_an_image.jpg"):
        with pytest.raises(BadImage):
            client.ocr(prepare((DATA / "bad" / name).read_bytes(), OCR_LIMITS).data)
    with pytest.raises(BadImage) as oversized:
        prepare((DATA / "bad" / "very_wide.png").read_bytes(), FACE_LIMITS)
    assert oversized.value.key == "error.image_too_narrow"
    with pytest.raises(BadImage):
        client.ocr(b"")
    with pytest.raises(BadImage) as too_big:
        client.face_match(b"x" * (2 * 1024 * 1024), b"y")
    assert too_big.value.key == "error.image_too_large"
    assert fake_baidu.token_fetches == 0 and fake_baidu.api_calls == 0


# -- OCR ----------------------------------------------------------------------------------------------


def test_ocr_lines_positions_probability_and_direction(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    fake_baidu.set_text(receipt, ["Coffee shop receipt", "Total  68.50"])
    client = client_for(fake_baidu)
    basic = client.ocr(receipt)
    assert [line.text for line in basic.lines] == ["Coffee shop receipt", "Total  68.50"]
    assert basic.lines[0].box is None and basic.direction is None and basic.log_id is not None
    assert basic.text == "Coffee shop receipt\nTotal  68.50"
    positional = client.ocr(receipt, api="accurate", language_type="ENG", detect_direction=True, probability=True)
    assert positional.lines[1].box == (10, 40, 144, 24)
    assert positional.lines[0].probability == pytest.approx(0.98)
    assert positional.direction == 0
    sent = fake_baidu.last_params["/rest/2.0/ocr/v1/accurate"]
    assert sent == {"language_type": "ENG", "detect_direction": "true", "paragraph": "false", "probability": "true"}


def test_ocr_registration_survives_reencoding(fake_baidu: FakeBaidu) -> None:
    original = (DATA / "text" / "zh_beer.png").read_bytes()
    fake_baidu.set_text(original, ["青島啤酒 TSINGTAO"])
    client = client_for(fake_baidu)
    sent = prepare(original, OCR_LIMITS)
    assert client.ocr(sent.data).text == "青島啤酒 TSINGTAO"
    other = prepare((DATA / "text" / "en_line.png").read_bytes(), OCR_LIMITS)
    assert client.ocr(other.data).text == f"{other.width}x{other.height}"


def test_unknown_ocr_api_is_a_programming_error(fake_baidu: FakeBaidu, receipt: bytes) -> None:
    with pytest.raises(ValueError):
        client_for(fake_baidu).ocr(receipt, api="handwriting")


# -- face match -----------------------------------------------------------------------------------------


def test_face_match_same_and_different_people(fake_baidu: FakeBaidu, faces: dict[str, bytes]) -> None:
    fake_baidu.set_face(faces["obama_1"], "obama")
    fake_baidu.set_face(faces["obama_2"], "obama")
    fake_baidu.set_face(faces["biden_1"], "biden")
    client = client_for(fake_baidu)
    same = client.face_match(faces["obama_1"], faces["obama_2"], face_type="CERT", quality_control="LOW")
    assert same.score == pytest.approx(92.5) and len(same.face_tokens) == 2
    assert client.face_match(faces["obama_1"], faces["biden_1"]).score == pytest.approx(12.0)
    sent = fake_baidu.last_params[MATCH_PATH]["images"]
    assert sent[0] == {
        "image_type": "BASE64",
        "face_type": "LIVE",
        "quality_control": "NONE",
        "liveness_control": "NONE",
    }


def test_no_face_and_face_quality_errors(fake_baidu: FakeBaidu, faces: dict[str, bytes]) -> None:
    no_face = prepare((DATA / "bad" / "no_face.png").read_bytes(), FACE_LIMITS).data
    fake_baidu.set_face(no_face, None)
    fake_baidu.set_face(faces["biden_1"], "biden", error=223114)
    client = client_for(fake_baidu)
    with pytest.raises(NoFace) as info:
        client.face_match(faces["obama_1"], no_face)
    assert info.value.code == 222202
    with pytest.raises(FaceQuality) as quality:
        client.face_match(faces["obama_1"], faces["biden_1"])
    assert quality.value.key == "error.face_blurred" and quality.value.code == 223114
    fake_baidu.inject(223118, path=MATCH_PATH)
    with pytest.raises(FaceQuality) as generic:
        client.face_match(faces["obama_1"], faces["obama_2"])
    assert generic.value.key == "error.face_quality"
    assert fake_baidu.count(MATCH_PATH) == 3


# -- QPS limiter ---------------------------------------------------------------------------------------


def test_limiter_spaces_slots() -> None:
    now = [0.0]
    limiter = RateLimiter(4, clock=lambda: now[0])
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    now[0] = 10.0
    assert limiter.reserve() == 0.0


def test_qps_set_to_the_cap_baidu_sold_keeps_a_headroom_that_absorbs_jitter(fake_baidu: FakeBaidu) -> None:
    """``providers.baidu.qps`` is the figure bought: 40 callers at once, each request arriving up to 10 ms after
    its slot (network jitter, a fixed pseudo-random draw), counted by the strictest front door (a bucket of one
    at the cap). Spaced exactly at the cap, 14 of them would draw an 18; 10 % under it, none does."""
    import random

    cap = 10.0
    client = BaiduClient.from_config(fake_baidu.config(qps=cap), tokens=TokenService())
    assert client.limiter.qps == cap and client.limiter.rate == pytest.approx(cap * QPS_HEADROOM)
    now = [100.0]
    client.limiter.budgets.clock = lambda: now[0]  # a still clock: everyone asks at the same instant
    jitter = random.Random(19)
    arrivals = sorted(client.limiter.reserve() + now[0] + jitter.uniform(0, 0.010) for _ in range(40))
    level, at, refused = 1.0, arrivals[0], 0  # the front door: 1 token, refilled at the cap
    for arrival in arrivals:
        level, at = min(1.0, level + (arrival - at) * cap), arrival
        if level >= 1.0:
            level -= 1.0
        else:
            refused += 1
    assert refused == 0


def test_bursts_queue_instead_of_drawing_18(receipt: bytes) -> None:
    with FakeBaidu(qps_cap=20) as fake:
        config = fake.config(qps=20)
        clients = [BaiduClient.from_config(config, tokens=TokenService()) for _ in range(2)]
        errors: list[Exception] = []

        def call(client: BaiduClient) -> None:
            try:
                client.ocr(receipt)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(clients[i % 2],)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert fake.errors_sent[18] == 0
        assert fake.count(OCR_PATH) == 40


# -- faceprint ------------------------------------------------------------------------------------------


def test_faceprint_flow(fake_baidu: FakeBaidu) -> None:
    client = client_for(fake_baidu)
    token = client.generate_verify_token("fake-plan")
    client.submit_idcard(token, "王小明", "110101199003072345")
    with pytest.raises(ProviderError) as pending:
        client.result_detail(token)
    assert type(pending.value) is ProviderError and pending.value.vendor == "baidu"
    assert pending.value.code == fake_baidu.pending_code
    fake_baidu.finish_verification(token, passed=True, score=88.0)
    detail = client.result_detail(token)
    assert detail.score == 88.0 and detail.liveness_score == pytest.approx(0.98)
    assert (detail.name, detail.id_number) == ("王**", "110***********2345")  # masked, as Baidu answers
    assert "王**" not in repr(detail) and "2345" not in repr(detail) and "88.0" in repr(detail)
    assert client.result_simple(token)["image"].startswith("https://")
    assert "stat" in client.result_stat(token)


def test_faceprint_identity_from_ocr_and_failed_verification(fake_baidu: FakeBaidu) -> None:
    client = client_for(fake_baidu)
    token = client.generate_verify_token("fake-plan")
    fake_baidu.finish_verification(token, passed=False, name="李雷", id_number="440101200001010011", via_ocr=True)
    detail = client.result_detail(token)
    assert isinstance(detail, VerifyDetail)
    assert detail.score is not None and detail.score < 80
    assert (detail.name, detail.id_number) == ("李*", "440***********0011")


def test_faceprint_errors_in_the_success_code_shape(fake_baidu: FakeBaidu) -> None:
    client = client_for(fake_baidu)
    with pytest.raises(ProviderMisconfigured) as plan:
        client.generate_verify_token("no-such-plan")
    assert plan.value.code == 283435 and "plan" in plan.value.detail
    fake_baidu.inject(283400, path="/rpc/2.0/brain/solution/faceprint/verifyToken")
    assert client.generate_verify_token("fake-plan").startswith("vt")
    fake_baidu.inject(6, path="/rpc/2.0/brain/solution/faceprint/")
    with pytest.raises(ProviderMisconfigured) as perm:
        client.generate_verify_token("fake-plan")
    assert "H5 real-name verification" in perm.value.detail


def test_h5_url(fake_baidu: FakeBaidu) -> None:
    client = client_for(fake_baidu)
    url = client.h5_url("vt123", "https://bot.example/ok?u=1", "http://bot.example/fail")
    assert url == (
        f"{fake_baidu.endpoint}/face/print/?token=vt123"
        "&successUrl=https%3A%2F%2Fbot.example%2Fok%3Fu%3D1&failedUrl=http%3A%2F%2Fbot.example%2Ffail"
    )
    for bad in ("/relative", "ftp://x.example/", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            client.h5_url("vt123", bad, "https://bot.example/fail")


# -- secrets stay out of logs ------------------------------------------------------------------------------


def test_no_secret_or_token_in_logs_or_errors(
    fake_baidu: FakeBaidu, receipt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(fake_baidu, retries=1)
    errors: list[Exception] = []
    client.ocr(receipt)
    fake_baidu.revoke()
    client.ocr(receipt)
    fake_baidu.inject(18, path=OCR_PATH)
    client.ocr(receipt)
    fake_baidu.inject(http_status=502, times=5, path=OCR_PATH)
    with pytest.raises(TemporarilyUnavailable) as e1:
        client.ocr(receipt)
    errors.append(e1.value)
    token = client.generate_verify_token("fake-plan")
    client.submit_idcard(token, "韩梅梅", "310101198801019876")
    fake_baidu.finish_verification(token)
    logging.getLogger("test").info("detail: %r", client.result_detail(token))
    wrong = BaiduClient(fake_baidu.api_key, "wrong-secret-xyz", endpoint=fake_baidu.endpoint, tokens=TokenService())
    with pytest.raises(ProviderMisconfigured) as e2:
        wrong.ocr(receipt)
    errors.append(e2.value)
    logging.getLogger("test").error("failed: %s", e2.value.detail)

    secrets = [fake_baidu.api_key, fake_baidu.secret_key, "wrong-secret-xyz", *fake_baidu.issued_tokens]
    secrets += ["韩梅梅", "310101198801019876"]
    assert len(fake_baidu.issued_tokens) >= 2
    assert "access_token=***" in caplog.text  # urllib3's request lines were there, redacted
    text = caplog.text + "".join(f"{e!r}{e}{getattr(e, 'detail', '')}" for e in errors)
    for secret in secrets:
        assert secret not in text
