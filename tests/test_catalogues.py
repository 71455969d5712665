"""Every user-facing string exists in English and Chinese, with the same placeholders."""

import string
from pathlib import Path

import pytest

from core.contract.i18n import load_dir, resolve_language

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIRS = [
    ROOT / "core" / "contract" / "locale",
    *sorted(p.parent for p in (ROOT / "plugins").glob("*/locale/en.yaml")),
]


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


def _plugin_catalogues() -> dict[str, dict]:
    """Every plugin's catalogue as its ``aipbot_messages`` hook returns it (locale files or strings in code)."""
    import importlib
    import importlib.util

    from core.runtime.plugins import builtin_plugins, instantiate

    modules = {name: importlib.import_module(module) for name, module in builtin_plugins().items()}
    spec = importlib.util.spec_from_file_location("aipbot_imageinfo", ROOT / "tests/example_plugin/aipbot_imageinfo.py")
    assert spec is not None and spec.loader is not None
    modules["imageinfo (example)"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modules["imageinfo (example)"])
    modules["caption (tests)"] = importlib.import_module("tests.caption_plugin")
    modules["probe (tests)"] = importlib.import_module("tests.probe_plugin")
    modules["rotate (tests)"] = importlib.import_module("tests.rotate_plugin")
    return {name: instantiate(module).aipbot_messages() for name, module in modules.items()}


@pytest.mark.parametrize(("name", "messages"), list(_plugin_catalogues().items()), ids=lambda v: str(v)[:30])
def test_every_plugins_catalogue_has_both_languages_whether_in_files_or_in_code(name, messages):
    en, zh = messages["en"], messages["zh"]
    assert set(en) == set(zh), f"{name}: only in en: {set(en) - set(zh)}; only in zh: {set(zh) - set(en)}"
    for key in en:
        assert placeholders(en[key]) == placeholders(zh[key]), f"{name}: {key}"


def test_every_message_key_the_code_names_exists():
    """Literal keys in ``t("…")`` and ``key="…"`` calls of core and the plugins are in the catalogue."""
    import re

    known = set(load_dir(ROOT / "core" / "contract" / "locale")["en"])
    for messages in _plugin_catalogues().values():
        known |= set(messages["en"])
    pattern = re.compile(r"""(?:\bt\(|\bkey=)\s*["']([a-z_]+\.[a-z0-9_.]+)["']""")
    missing = []
    for path in [
        *(ROOT / "core").rglob("*.py"),
        *(ROOT / "plugins").rglob("*.py"),
        ROOT / "tests/caption_plugin.py",
        ROOT / "tests/rotate_plugin.py",
    ]:
        for key in pattern.findall(path.read_text(encoding="utf-8")):
            if key not in known:
                missing.append(f"{path.relative_to(ROOT)}: {key}")
    assert not missing, missing
