"""Conformance: Baidu's own SDK (``baidu-aip``) talks to our fake server successfully.

If the official client accepts the fake's answers, the fake speaks Baidu's protocol, and our client's
tests against the fake mean something. The SDK hard-codes ``https://aip.baidubce.com`` in name-mangled
class attributes (``_AipBase__accessTokenUrl``, ``_AipOcr__generalBasicUrl``, ``_AipFace__matchUrl``);
the script below overrides them on the instance. The SDK also turns off urllib3's TLS warnings for the
whole process and sends ``verify=False``, so it runs in a subprocess: nothing it changes reaches our
process, and the last test proves our session still verifies certificates.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from core.infra.http import HttpSettings, make_session
from core.infra.images import FACE_LIMITS, OCR_LIMITS, prepare
from core.infra.tokens import TokenService
from core.providers.baidu import BaiduClient
from tests.fakes.baidu import MATCH_PATH, TOKEN_PATH, FakeBaidu
from tests.test_http import tls_server

# find_spec, not import: importing aip here would change this process (that is the point of the subprocess)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("aip") is None, reason="baidu-aip is not installed")

DATA = Path(__file__).resolve().parents[1] / "examples"

SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from aip import AipFace, AipOcr
    import base64

    endpoint, api_key, secret_key, text_image, face_a, face_b = sys.argv[1:7]
    def point(client):
        client._AipBase__accessTokenUrl = endpoint + "/oauth/2.0/token"
        return client

    ocr = point(AipOcr("10000001", api_key, secret_key))
    ocr._AipOcr__generalBasicUrl = endpoint + "/rest/2.0/ocr/v1/general_basic"
    face = point(AipFace("10000001", api_key, secret_key))
    face._AipFace__matchUrl = endpoint + "/rest/2.0/face/v3/match"

    def b64(path):
        return base64.b64encode(open(path, "rb").read()).decode()

    out = {
        "ocr": ocr.basicGeneral(open(text_image, "rb").read(), {"language_type": "CHN_ENG", "probability": "true"}),
        "match": face.match([
            {"image": b64(face_a), "image_type": "BASE64", "face_type": "LIVE", "quality_control": "LOW"},
            {"image": b64(face_b), "image_type": "BASE64"},
        ]),
        "again": ocr.basicGeneral(open(text_image, "rb").read()),
        "cloud_user": ocr._isCloudUser,
    }
    print(json.dumps(out, ensure_ascii=False))
    """
)


def run_sdk(fake: FakeBaidu, *paths: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, fake.endpoint, fake.api_key, fake.secret_key, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


def test_the_official_sdk_runs_ocr_and_face_match_against_the_fake(fake_baidu: FakeBaidu) -> None:
    text_image = DATA / "text" / "receipt.jpg"
    face_a, face_b = DATA / "faces" / "obama_1.jpg", DATA / "faces" / "obama_2.jpg"
    fake_baidu.set_text(text_image.read_bytes(), ["Coffee shop receipt", "Total  68.50"])
    fake_baidu.set_face(face_a.read_bytes(), "obama")
    fake_baidu.set_face(face_b.read_bytes(), "obama")
    fake_baidu.inject(18, times=1, path="/rest/2.0/ocr/v1/general_basic")
    result = run_sdk(fake_baidu, text_image, face_a, face_b)
    # The SDK does not retry 18: its first OCR call returns the error dict as Baidu would send it.
    assert result["ocr"]["error_code"] == 18 and "qps" in result["ocr"]["error_msg"]
    assert result["cloud_user"] is False  # the fake's token scope made it use access tokens, as real Baidu does
    assert [w["words"] for w in result["again"]["words_result"]] == ["Coffee shop receipt", "Total  68.50"]
    assert result["again"]["words_result_num"] == 2 and "log_id" in result["again"]
    assert result["match"]["error_code"] == 0 and result["match"]["result"]["score"] == pytest.approx(92.5)
    assert len(result["match"]["result"]["face_list"]) == 2
    assert fake_baidu.count(TOKEN_PATH) == 2  # one per SDK client object (AipOcr, AipFace)
    assert fake_baidu.count(MATCH_PATH) == 1


def test_sdk_and_our_client_agree_on_the_fake(fake_baidu: FakeBaidu) -> None:
    """The registrations a test makes for raw files also hold for our prepared (re-encoded) images."""
    text_image = DATA / "text" / "zh_notice.png"
    face_a, face_b = DATA / "faces" / "biden_1.jpg", DATA / "faces" / "obama_2.jpg"
    fake_baidu.set_text(text_image.read_bytes(), ["通用文字识别", "百度智能云 OCR 接口"])
    sdk = run_sdk(fake_baidu, text_image, face_a, face_b)
    client = BaiduClient.from_config(fake_baidu.config(), tokens=TokenService())
    assert client is not None
    ours = client.ocr(prepare(text_image.read_bytes(), OCR_LIMITS).data)
    assert [w["words"] for w in sdk["ocr"]["words_result"]] == [line.text for line in ours.lines]
    match = client.face_match(
        prepare(face_a.read_bytes(), FACE_LIMITS).data, prepare(face_b.read_bytes(), FACE_LIMITS).data
    )
    assert sdk["match"]["result"]["score"] == match.score == pytest.approx(12.0)


def test_the_sdk_leaves_our_process_and_tls_alone(tmp_path: Path) -> None:
    assert "aip" not in sys.modules, "baidu-aip was imported in the test process: it disables TLS warnings there"
    session = make_session(HttpSettings(retries=0))
    assert session.verify is True
    with tls_server(tmp_path) as url, pytest.raises(requests.exceptions.SSLError):
        session.get(url + "/")
