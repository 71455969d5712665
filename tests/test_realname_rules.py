"""The decision tables of docs/realname.md ("The outcome rules"), row by row, for both providers.

Each row is written as the provider's answer (as the clients parse it) and the outcome the table says. The rows
are also checked against the table in the docs, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from core.providers.baidu import VerifyDetail
from core.providers.webank import FaceRecord
from plugins.realname.rules import BAIDU_FAILED_CODES, PassRule, WebankRule, baidu_verdict, webank_verdict

ROOT = Path(__file__).resolve().parent.parent
RULE = PassRule(min_score=80, min_liveness=0.3, max_spoofing=0.00048)


def detail(score=None, liveness=None, spoofing=None) -> VerifyDetail:
    return VerifyDetail(score=score, liveness_score=liveness, spoofing=spoofing, name="柴*", id_number="370***5826")


def record(code: str, similarity=None, live_rate=None, occurred=None) -> FaceRecord:
    has = any(v is not None for v in (similarity, live_rate, occurred))
    return FaceRecord("order1", code, "msg", similarity, live_rate, occurred, has)


PENDING = "pending"
# (row, provider answer, error code, outcome: "pending" | ("passed",) | ("failed", checks))
BAIDU_ROWS = [
    ("B1", detail(91.5, 0.98, 0.00002), None, ("passed", ())),
    ("B1", detail(91.5, 0.0, 0.00002), None, ("passed", ())),  # liveness 0: reserved, "not reported"
    ("B1", detail(91.5, None, 0.00002), None, ("passed", ())),  # liveness missing: not reported either
    ("B1", detail(79.9, 0.98, 0.00002), None, ("failed", ("score",))),
    ("B1", detail(91.5, 0.12, 0.00002), None, ("failed", ("liveness",))),
    ("B1", detail(91.5, 0.98, 0.87), None, ("failed", ("spoofing",))),
    ("B1", detail(91.5, 0.98, None), None, ("failed", ("spoofing",))),  # spoofing missing: fail closed
    ("B1", detail(31.0, 0.12, 0.87), None, ("failed", ("score", "liveness", "spoofing"))),
    ("B2", detail(), None, PENDING),  # success without verify_result
    ("B2", detail(None, 0.98, 0.00002), None, PENDING),  # no similarity yet: never passed on doubt
    ("B2", None, None, PENDING),
    ("B3", None, 223120, ("failed", ("liveness",))),
    ("B3", None, 222351, ("failed", ("identity",))),
    ("B3", None, 222354, ("failed", ("identity",))),
    ("B3", None, 222356, ("failed", ("score",))),
    ("B3", None, 222202, ("failed", ("face",))),
    ("B3", None, "223114", ("failed", ("face",))),  # a code as a string is the same code
    ("B4", None, 283414, PENDING),
    ("B4", None, 216100, PENDING),
    ("B4", None, 999999, PENDING),  # undocumented: not finished (never passed, never failed on doubt)
    ("B4", None, "weird", PENDING),
]
WEBANK_ROWS = [
    ("W1", record("0", 95.25, 99, "20240101120500"), None, ("passed", ())),
    ("W1", record("0"), None, ("passed", ())),  # WeBank's verdict; no scores to hold against it
    ("W1", record("0", 0, 0, "20240101120500"), None, ("passed", ())),  # 0: not reported
    ("W2", record("66660015", 31, 12, "20240101120500"), None, ("failed", ("webank",))),
    ("W2", record("66660015", None, None, "20240101120500"), "0", ("failed", ("webank",))),
    ("W3", record("400106"), None, PENDING),
    ("W3", record("66660015"), None, PENDING),  # a code without record and no callback yet: not finished
    ("W4", record("66660015"), "3003", ("failed", ("webank",))),
    ("W4", record("400106"), "66660015", ("failed", ("webank",))),
    ("W5", record("400106"), "0", PENDING),
]


def outcome(result) -> object:
    if result is None:
        return PENDING
    return ("passed", ()) if result.passed else ("failed", result.failed_checks)


@pytest.mark.parametrize(("row", "answer", "code", "expected"), BAIDU_ROWS)
def test_baidu_decision_table(row, answer, code, expected):
    result = baidu_verdict(answer, code, RULE)
    assert outcome(result) == expected, row
    if result is not None and answer is not None:
        assert result.name == "柴*" and "柴" not in repr(result)  # the identity travels, never in repr


@pytest.mark.parametrize(("row", "answer", "callback", "expected"), WEBANK_ROWS)
def test_webank_decision_table(row, answer, callback, expected):
    assert outcome(webank_verdict(answer, callback, WebankRule())) == expected, row


def test_webank_local_thresholds_on_top_of_its_verdict():
    rule = WebankRule(min_similarity=90, min_live_rate=50)
    assert outcome(webank_verdict(record("0", 95, 99, "t"), None, rule)) == ("passed", ())
    assert outcome(webank_verdict(record("0", 85, 99, "t"), None, rule)) == ("failed", ("similarity",))
    assert outcome(webank_verdict(record("0", 95, 40, "t"), None, rule)) == ("failed", ("live_rate",))


def test_every_row_of_the_docs_table_is_tested_and_every_tested_row_is_in_the_docs():
    docs = (ROOT / "docs" / "realname.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| \*\*([BW]\d)\*\* \|", docs, flags=re.MULTILINE))
    tested = {row for row, *_ in BAIDU_ROWS + WEBANK_ROWS}
    assert documented == tested
    for code in BAIDU_FAILED_CODES:
        assert str(code) in docs, code


def test_the_page_strings_exist_in_both_languages_with_the_same_keys():
    locale = ROOT / "plugins" / "realname" / "locale"
    en = yaml.safe_load((locale / "en.yaml").read_text(encoding="utf-8"))
    zh = yaml.safe_load((locale / "zh.yaml").read_text(encoding="utf-8"))
    assert set(en) == set(zh)
    for key in ("realname.page.title", "realname.page.done", "realname.page.pending", "realname.page.button"):
        assert en[key] and zh[key] and en[key] != zh[key]
    for check in {c for _, _, _, o in BAIDU_ROWS + WEBANK_ROWS if o != PENDING for c in o[1]}:
        assert f"realname.check.{check}" in en


def test_the_baidu_provider_applies_the_table_to_what_the_strict_fake_answers(fake_baidu):
    from core.providers.baidu import BaiduClient
    from plugins.realname.providers import BaiduFaceprint

    provider = BaiduFaceprint(BaiduClient.from_config(fake_baidu.config()), "fake-plan", RULE)
    zero, failed, pending = (provider.start("https://example.org/back").reference for _ in range(3))
    assert provider.result(pending) is None  # B4: the fake's "not finished" code
    fake_baidu.finish_verification(zero, liveness_score=0.0, name="柴静", id_number="370102199001015826")
    result = provider.result(zero)
    assert result is not None and result.passed and result.liveness is None  # B1: 0 is "not reported"
    assert (result.name, result.id_number) == ("柴*", "370***********5826")  # masked by Baidu
    fake_baidu.finish_verification(failed, passed=False, code=222351)
    result = provider.result(failed)
    assert result is not None and not result.passed and result.failed_checks == ("identity",)  # B3
    assert (result.score, result.liveness, result.spoofing) == (None, None, None)


def test_the_webank_provider_fails_a_recordless_attempt_only_after_a_signed_callback(fake_webank):
    import requests

    from core.providers.webank import WebankClient
    from plugins.realname.providers import Identity, WebankFaceId

    provider = WebankFaceId(WebankClient.from_config(fake_webank.config()))
    launch = provider.start("https://example.org/back", Identity("李雷", "370102199001015822"))
    requests.get(launch.url, timeout=5)
    assert provider.result(launch.reference) is None  # W3: not finished
    callback = fake_webank.finish(launch.reference, passed=False, record=False)
    assert provider.result(launch.reference) is None  # W3: a failure code, no record, no callback yet
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert provider.check_return(launch.reference, params) and params["code"] != "0"
    result = provider.result(launch.reference, params["code"])
    assert result is not None and not result.passed and result.score is None  # W4
