"""Configuration: substitution, defaults, and one clear line for every kind of broken config."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.runtime.config import ConfigError, load, substitute, validate

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_fill_an_empty_config():
    config = validate({})
    assert config["telegram"]["token"] == ""
    assert config["providers"]["baidu"]["endpoint"] == "https://aip.baidubce.com"
    assert config["workers"] == {"io": 8, "cpu": 1}
    assert config["plugins"] == {}


def test_variables_are_substituted_with_defaults_and_typed_where_a_number_is_wanted():
    env = {"TOKEN": "123:abc", "QPS": "5"}
    raw = substitute({"a": "${TOKEN}", "b": "x-${MISSING:-dflt}-y", "c": "${QPS}"}, env=env)
    assert raw == {"a": "123:abc", "b": "x-dflt-y", "c": "5"}
    config = validate(substitute({"providers": {"baidu": {"qps": "${QPS}"}}}, env=env))
    assert config["providers"]["baidu"]["qps"] == 5.0


def test_an_unset_variable_is_named_in_the_error(monkeypatch):
    monkeypatch.delenv("AIPBOT_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as err:
        validate({"telegram": {"token": "${AIPBOT_TEST_UNSET}"}})
    assert str(err.value).startswith("telegram.token: environment variable AIPBOT_TEST_UNSET is not set")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"telegram": {"tokn": "x"}}, "telegram.tokn: unknown key (known here: token, base_url"),
        ({"workers": {"io": "many"}}, "workers.io: must be an integer (got 'many')"),
        ({"workers": {"io": 0}}, "workers.io: must be at least 1 (got 0)"),
        ({"language": {"default": "fr"}}, "language.default: must be one of en, zh (got 'fr')"),
        ({"access": {"admins": [1, "bob"]}}, "access.admins[1]: must be an integer (got 'bob')"),
        ({"access": {"daily_quota": {"ocr": -1}}}, "access.daily_quota.ocr: must be at least 0 (got -1)"),
        ({"plugins": {"ocr": {"enabled": "yes"}}}, "plugins.ocr.enabled: must be true or false (got 'yes')"),
        ({"telegram": "x"}, "telegram: must be a mapping (got 'x')"),
        (
            {"providers": {"baidu": {"endpoint": "http://aip.baidubce.com"}}},
            "providers.baidu.endpoint: must be an absolute https URL (plain http only to 127.0.0.1 or localhost",
        ),
        (
            {"telegram": {"base_url": "http://example.com/bot"}},
            "telegram.base_url: must be an absolute https URL (plain http only to 127.0.0.1 or localhost; "
            "got 'http://example.com/bot')",
        ),
        (
            {"telegram": {"base_file_url": "http://192.168.1.5:8081/file/bot"}},
            "telegram.base_file_url: must be an absolute https URL (plain http only to 127.0.0.1 or localhost",
        ),
        (
            {"providers": {"webank": {"endpoint": "kyc1.qcloud.com"}}},
            "providers.webank.endpoint: must be an absolute https URL",
        ),
    ],
)
def test_validation_errors_name_the_key_and_the_problem(raw, message):
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert str(err.value).startswith(message)


def test_telegram_base_urls_may_be_plain_http_only_to_this_machine():
    config = validate(
        {"telegram": {"base_url": "http://127.0.0.1:8081/bot", "base_file_url": "http://localhost:8081/file/bot"}}
    )
    assert config["telegram"]["base_url"] == "http://127.0.0.1:8081/bot"
    assert config["telegram"]["base_file_url"] == "http://localhost:8081/file/bot"
    for url in ("http://127.0.0.1.example.com/bot", "http://localhost.example.com/bot", "https://"):
        with pytest.raises(ConfigError) as err:
            validate({"telegram": {"base_url": url}})
        assert str(err.value).startswith("telegram.base_url: must be an absolute https URL")


def test_secrets_from_config_are_registered_for_redaction(monkeypatch):
    from core.infra.redact import redact

    monkeypatch.setenv("AIPBOT_TEST_KEY", "sk-very-secret-value")
    validate(substitute({"providers": {"baidu": {"secret_key": "${AIPBOT_TEST_KEY}"}}}))
    assert redact("calling with sk-very-secret-value now") == "calling with *** now"


def test_the_shipped_config_yaml_is_valid():
    config = load(ROOT / "config.yaml")
    assert config["telegram"]["base_url"] == "https://api.telegram.org/bot"


def run_bot(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("telegram: [unclosed\n", "invalid YAML at line"),
        ("telegram:\n  tokn: x\n", "telegram.tokn: unknown key"),
        ("workers:\n  io: lots\n", "workers.io: must be an integer (got 'lots')"),
        ("telegram:\n  token: ${AIPBOT_SURELY_UNSET}\n", "environment variable AIPBOT_SURELY_UNSET is not set"),
        ("plugins:\n  nosuchplugin: {}\n", "plugins.nosuchplugin: unknown plugin (available:"),
        ("storage:\n  path: /proc/nope/db.sqlite3\n", "storage.path: cannot open the database '/proc/nope/db.sqlite3'"),
        ("access:\n  daily_quota: {OCR: 5}\n", "access.daily_quota.OCR: no such command (enabled: none)"),
    ],
)
def test_a_broken_config_stops_the_bot_with_one_clear_line(tmp_path, text, expected):
    if "storage" not in text:
        text += f"storage: {{path: {tmp_path / 'db.sqlite3'}}}\n"
    result = run_bot(tmp_path, text, "--check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aipbot: configuration error:")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(tmp_path / "nope.yaml"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"aipbot: configuration error: {tmp_path / 'nope.yaml'}: cannot read the file (No such file or directory)"
    )


def test_plain_http_to_this_machine_is_allowed_for_local_fakes():
    config = validate({"providers": {"baidu": {"endpoint": "http://127.0.0.1:8080"}}})
    assert config["providers"]["baidu"]["endpoint"] == "http://127.0.0.1:8080"


def test_each_provider_declares_its_config_schema_and_what_it_can_do():
    from core.providers import PROVIDERS, capabilities, schemas

    assert set(schemas()) == set(PROVIDERS) == {"baidu", "webank", "tencent"}
    assert {"ocr", "face"} <= capabilities("baidu") and "ocr" not in capabilities("webank")
    assert capabilities("tencent") == {"video_liveness"} and "video_liveness" in capabilities("baidu")


def test_one_engine_rule_for_every_plugin():
    from core.contract.errors import ProviderMisconfigured
    from core.providers import choose_engine

    class Services:
        def __init__(self, client):
            self.client = client

        def provider(self, name):
            return self.client

    assert choose_engine(Services("client"), "auto", "x") == "client"
    assert choose_engine(Services(None), "auto", "x") is None
    assert choose_engine(Services("client"), "local", "x") is None
    with pytest.raises(ProviderMisconfigured, match=r"x is baidu, but providers\.baidu has no keys"):
        choose_engine(Services(None), "baidu", "x")
    with pytest.raises(ValueError, match="cannot do ocr"):
        choose_engine(Services("client"), "auto", "x", "webank", needs="ocr")
