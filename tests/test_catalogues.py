"""Every user-facing string exists in English and Chinese, with the same placeholders."""

import string
from pathlib import Path

import pytest

from core.i18n import load_dir, resolve_language

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIRS = [ROOT / "core" / "locale", *sorted(p.parent for p in (ROOT / "plugins").glob("*/locale/en.yaml"))]


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("directory", LOCALE_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_english_and_chinese_catalogues_have_the_same_keys_and_placeholders(directory):
    messages = load_dir(directory)
    en, zh = messages["en"], messages["zh"]
    assert set(en) == set(zh), f"only in en: {set(en) - set(zh)}; only in zh: {set(zh) - set(en)}"
    for key in en:
        assert placeholders(en[key]) == placeholders(zh[key]), key


@pytest.mark.parametrize(
    ("code", "expected"),
    [("zh-hans", "zh"), ("zh-TW", "zh"), ("zh", "zh"), ("en-GB", "en"), ("fr", "en"), (None, "en")],
)
def test_chinese_for_any_zh_language_code_else_english(code, expected):
    assert resolve_language(code) == expected


def test_missing_language_code_uses_the_configured_default():
    assert resolve_language(None, "zh") == "zh"
