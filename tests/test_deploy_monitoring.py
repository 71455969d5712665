"""deploy/prometheus (alert rules and their unit tests) and deploy/grafana (the dashboard): valid for promtool
(Debian's `prometheus` package), and naming only metrics the bot really exports, read from a real scrape of
``/metrics`` of a bot running on the fake Bot API."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import yaml

from core.runtime.config import validate
from tests import probe_plugin
from tests.harness import merge
from tests.servers import free_port
from tests.test_webhook import webhook_config

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/alerts.yaml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts.test.yaml"
DASHBOARD = ROOT / "deploy/grafana/aipbot.json"
ALERTS = {"AipbotBacklogGrowing", "AipbotOutboxStuck", "AipbotProviderErrors", "AipbotTelegram429", "AipbotNotReady"}

#: What a metric family's TYPE line means for the sample names Prometheus stores.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "untyped": ("",),
}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def exported(exposition: str) -> set[str]:
    """The sample names a scrape of this exposition stores: from the TYPE lines (families without samples yet
    included) and from the samples."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            names |= {family + suffix for suffix in SUFFIXES[kind]}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, grouping labels, ranges, strings, Grafana
    variables and function names left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(\s*\()?", expr):
        if not match.group(2) and match.group(1) not in _KEYWORDS:
            names.add(match.group(1))
    return names


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True
    )
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_every_alert_the_issue_asks_for_is_there_and_unit_tested():
    alerts = set(rule_expressions())
    assert alerts >= ALERTS
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    assert tested == alerts


def test_the_name_extraction_sees_metrics_and_nothing_else():
    expr = 'sum by (le, code) (rate(aipbot_x_bucket{code!="ok"}[5m])) / on(instance) max(up) > 0 and $v'
    assert metric_names(expr) == {"aipbot_x_bucket", "up"}


async def test_the_rules_and_the_dashboard_name_only_metrics_the_bot_exports(
    fake_telegram, fake_baidu, start_bot, tmp_path
):
    """A bot in webhook mode with Baidu OCR (so the webhook, provider, rate limiter, token and conversation
    metrics have samples), whose first reply draws a 429 from Telegram."""
    port = free_port()
    config = webhook_config(fake_telegram, tmp_path, port, **fake_baidu.config(qps=2.0))
    config = validate(merge(config, {"plugins": {"ocr": {"engine": "baidu"}}}))
    receipt = (ROOT / "examples/text/receipt.jpg").read_bytes()
    fake_baidu.set_text(receipt, ["Coffee shop receipt"])
    fake_telegram.fail("sendMessage", kind="429", retry_after=1)
    await start_bot(config, {"probe": probe_plugin})
    fake_telegram.user_sends_text("/ocr")
    await fake_telegram.bot_replied(timeout=30)  # "send the photo", after the 429
    fake_telegram.user_sends_album([receipt, receipt])  # two Baidu calls: the second waits for the QPS budget
    assert "Coffee shop receipt" in (await fake_telegram.bot_replied(timeout=30)).text
    async with httpx.AsyncClient(timeout=10) as client:
        scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert scrape.status_code == 200
    names = exported(scrape.text)
    assert {"aipbot_intake_depth", "aipbot_outbox_depth", "aipbot_ready", "aipbot_updates_total"} <= names
    assert re.search(r'^aipbot_ready\{check="store"\} 1\.0$', scrape.text, re.M)
    assert re.search(r'^aipbot_telegram_errors_total\{code="429"\} 1\.0$', scrape.text, re.M)

    used = {}
    for alert, expr in rule_expressions().items():
        used.update(dict.fromkeys(metric_names(expr), f"alert {alert}"))
    for expr in dashboard_expressions():
        used.update(dict.fromkeys(metric_names(expr), "the dashboard"))
    assert len(used) >= 10
    unknown = {name: where for name, where in used.items() if name not in names}
    assert not unknown, f"not exported by the bot: {unknown}"


def test_the_dashboard_is_grafana_json_with_one_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "aipbot" and dashboard["panels"]
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"] and panel["description"]
