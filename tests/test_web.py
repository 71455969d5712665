"""The bot's web server: real HTTP on 127.0.0.1 against the server the bot starts (Telegram transport on the fake
Bot API, the console transport in a real process), and the metrics it serves."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from core.contract.chat import Reply
from core.contract.hookspecs import hookimpl
from core.infra.metrics import Metrics, token_label
from core.runtime.app import App
from core.runtime.config import ConfigError, validate
from tests.harness import RecordingTransport, merge
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples"
TOKEN = "metrics-token-0123456789"


def telegram_config(fake, server: dict | None = None, **overrides) -> dict:
    base = {
        **fake.config(album_wait=0.3),
        "storage": {"path": ":memory:"},
        "server": {"listen": "127.0.0.1", "port": 0, **(server or {})},
    }
    return validate(merge(base, overrides))


@pytest.fixture
def web(fake_telegram, start_bot):
    """``await web(server={...}, **config)`` starts the bot on the fake Bot API with a web server on a free port;
    returns ``(transport, base_url)``."""

    async def start(server: dict | None = None, extra_plugins: dict | None = None, **overrides):
        transport = await start_bot(telegram_config(fake_telegram, server, **overrides), extra_plugins)
        return transport, f"http://127.0.0.1:{transport.app.web.port}"

    return start


async def get(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kwargs)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and found == labels:
            return float(value)
    return None


# -- configuration -------------------------------------------------------------------------------------------


def test_no_server_section_or_enabled_false_means_no_server():
    assert validate({})["server"] is None
    app = App(validate({"storage": {"path": ":memory:"}}))
    assert not app.web.enabled
    app.web.bind()  # nothing to do
    app.services.close()
    section = validate({"server": {"enabled": False}})["server"]
    assert section["enabled"] is False


def test_server_defaults_and_public_url_must_be_https_unless_loopback():
    section = validate({"server": None})["server"]
    assert section == {
        "enabled": True,
        "listen": "127.0.0.1",
        "port": 8080,
        "public_url": "",
        "metrics_token": "",
        "max_body_kb": 1024,
        "ready_cache": 5.0,
        "read_timeout": 10.0,
        "keep_alive": 5.0,
        "max_connections": 200,
        "max_header_kb": 16,
    }
    assert validate({"server": {"public_url": "https://bot.example.com"}})["server"]["public_url"]
    assert validate({"server": {"public_url": "http://127.0.0.1:8080"}})["server"]["public_url"]
    with pytest.raises(ConfigError, match=r"^server.public_url: must be an absolute https URL"):
        validate({"server": {"public_url": "http://bot.example.com"}})
    with pytest.raises(ConfigError, match=r"^server.port: must be at most 65535"):
        validate({"server": {"port": 70000}})
    with pytest.raises(ConfigError, match=r"^server.lisen: unknown key"):
        validate({"server": {"lisen": "0.0.0.0"}})


def test_config_yaml_documents_every_server_key_with_its_default():
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    block = text[text.index("\n# server:\n") + 1 :]
    lines = [line for line in block.splitlines() if line.startswith("# server:") or line.startswith("#   ")]
    uncommented = "\n".join(line[2:] for line in lines if not line[2:].lstrip().startswith("#"))
    documented = yaml.safe_load(uncommented)["server"]
    assert set(documented) == set(validate({"server": None})["server"])
    assert validate({"server": documented})["server"] == validate({"server": None})["server"]


# -- health, readiness ---------------------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_when_the_bot_runs_on_telegram(web):
    _, base = await web()
    health = await get(base + "/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    ready = await get(base + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "not_ready": [],
        "checks": {"config": "ok", "store": "ok", "state": "ok", "telegram": "ok"},
    }


async def test_readyz_is_503_naming_telegram_when_the_bot_api_does_not_answer(web, fake_telegram):
    _, base = await web(server={"ready_cache": 0})
    assert (await get(base + "/readyz")).status_code == 200
    fake_telegram.fail("getMe", times=20, kind="5xx")
    ready = await get(base + "/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and body["not_ready"] == ["telegram"]
    assert body["checks"]["store"] == "ok" and body["checks"]["telegram"].startswith("error: ")


async def test_the_getme_answer_is_cached_for_ready_cache_seconds(web, fake_telegram):
    _, base = await web(server={"ready_cache": 60})
    before = len(fake_telegram.calls_of("getMe"))
    answers = await asyncio.gather(*(get(base + "/readyz") for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert len(fake_telegram.calls_of("getMe")) - before <= 1  # one call (none if start-up's is still fresh)


async def test_readyz_is_503_naming_the_store_when_it_is_closed(web):
    transport, base = await web()
    transport.app.services.store.close()
    ready = await get(base + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["not_ready"] == ["store"]


async def test_readyz_without_a_transport_check_on_the_console_kind_of_transport():
    app = App(validate({"storage": {"path": ":memory:"}, "server": {"port": 0}}), transport=RecordingTransport())
    app.start()
    try:
        ready = await get(f"http://127.0.0.1:{app.web.port}/readyz")
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"config", "store", "state"}
    finally:
        app.stop()
        await app.web.closed()


# -- metrics -------------------------------------------------------------------------------------------------


async def test_metrics_count_the_help_command_sent_through_the_bot_api(web, fake_telegram):
    _, base = await web()
    before = (await get(base + "/metrics")).text
    assert sample(before, "aipbot_commands_total", command="help", outcome="ok") is None
    fake_telegram.user_sends_text("/help")
    await fake_telegram.bot_replied()
    for _ in range(50):  # the counter moves when the handler returns, just after its reply was sent
        scraped = await get(base + "/metrics")
        if sample(scraped.text, "aipbot_commands_total", command="help", outcome="ok") == 1.0:
            break
        await asyncio.sleep(0.05)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    assert sample(scraped.text, "aipbot_commands_total", command="help", outcome="ok") == 1.0
    assert "process_cpu_seconds_total" in scraped.text


async def test_an_ocr_through_the_fake_baidu_moves_the_provider_metrics(web, fake_telegram, fake_baidu):
    image = (DATA / "text" / "en_line.png").read_bytes()
    fake_baidu.set_text(image, ["Hello"])
    _, base = await web(plugins={"ocr": {"engine": "baidu"}}, **fake_baidu.config(qps=2))
    for n in range(2):  # two calls at 2 QPS: the second waits for the limiter
        fake_telegram.user_sends_photo(image, caption="/ocr")
        assert (await fake_telegram.bot_replied(timeout=30)).text == "Hello", n
    text = (await get(base + "/metrics")).text
    api = {"provider": "baidu", "api": "ocr_general_basic"}
    assert sample(text, "aipbot_provider_request_seconds_count", **api) == 2.0
    assert sample(text, "aipbot_provider_request_seconds_sum", **api) > 0
    assert sample(text, "aipbot_provider_requests_total", **api, code="ok") == 2.0
    assert sample(text, "aipbot_token_fetches_total", token="baidu", outcome="ok") == 1.0
    assert sample(text, "aipbot_qps_waits_total", provider="baidu") >= 1.0
    assert sample(text, "aipbot_qps_wait_seconds_total", provider="baidu") > 0
    for _ in range(50):
        text = (await get(base + "/metrics")).text
        if sample(text, "aipbot_commands_total", command="ocr", outcome="ok") == 2.0:
            break
        await asyncio.sleep(0.05)
    assert sample(text, "aipbot_commands_total", command="ocr", outcome="ok") == 2.0
    assert fake_baidu.api_key not in text and fake_baidu.secret_key not in text


async def test_a_baidu_error_code_is_counted_under_its_code(web, fake_telegram, fake_baidu):
    image = (DATA / "text" / "en_line.png").read_bytes()
    fake_baidu.daily_limit = 0  # error 17
    _, base = await web(plugins={"ocr": {"engine": "baidu"}}, **fake_baidu.config())
    fake_telegram.user_sends_photo(image, caption="/ocr")
    await fake_telegram.bot_replied(timeout=30)
    for _ in range(50):
        text = (await get(base + "/metrics")).text
        if sample(text, "aipbot_commands_total", command="ocr", outcome="user_error") == 1.0:
            break
        await asyncio.sleep(0.05)
    assert sample(text, "aipbot_provider_requests_total", provider="baidu", api="ocr_general_basic", code="17") == 1
    assert sample(text, "aipbot_commands_total", command="ocr", outcome="user_error") == 1.0


async def test_webank_requests_and_token_fetches_are_counted_in_the_bots_own_metrics(fake_webank):
    app = App(validate({"storage": {"path": ":memory:"}, **fake_webank.config()}))
    other = App(validate({"storage": {"path": ":memory:"}}))
    try:
        client = app.services.provider("webank")
        await app.services.run_blocking(client.sign_ticket)
        text = (await app.metrics.render()).decode()
        for api in ("access_token", "sign_ticket"):
            assert sample(text, "aipbot_provider_requests_total", provider="webank", api=api, code="ok") == 1.0
            assert sample(text, "aipbot_provider_request_seconds_count", provider="webank", api=api) == 1.0
            assert sample(text, "aipbot_token_fetches_total", token=f"webank:{api}", outcome="ok") == 1.0
        assert "webank" not in (await other.metrics.render()).decode()
        assert fake_webank.secret not in text
    finally:
        app.services.close()
        other.services.close()


async def test_metrics_with_a_token_need_the_bearer_token(web):
    _, base = await web(server={"metrics_token": TOKEN})
    assert (await get(base + "/metrics")).status_code == 401
    wrong = await get(base + "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    right = await get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200 and "aipbot_commands_total" in right.text


async def test_metrics_without_a_token_answer_only_this_machine():
    def client(app: App, host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app.web.asgi, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://bot")

    app = App(validate({"storage": {"path": ":memory:"}, "server": {"port": 0}}))
    token_app = App(validate({"storage": {"path": ":memory:"}, "server": {"metrics_token": TOKEN}}))
    try:
        async with client(app, "192.0.2.7") as remote:
            refused = await remote.get("/metrics")
            assert refused.status_code == 403 and "server.metrics_token" in refused.text
            assert (await remote.get("/healthz")).status_code == 200
        for host in ("127.0.0.1", "::1"):
            async with client(app, host) as local:
                assert (await local.get("/metrics")).status_code == 200
        async with client(token_app, "192.0.2.7") as remote:  # with a token: from anywhere, with the token only
            assert (await remote.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        async with client(token_app, "127.0.0.1") as local:
            assert (await local.get("/metrics")).status_code == 401
    finally:
        app.services.close()
        token_app.services.close()


async def test_two_bots_in_one_process_count_apart():
    first = App(validate({"storage": {"path": ":memory:"}}))
    second = App(validate({"storage": {"path": ":memory:"}}))
    first.metrics.command_handled("help", "ok")
    assert "aipbot_commands_total{" in (await first.metrics.render()).decode()
    assert "aipbot_commands_total{" not in (await second.metrics.render()).decode()
    first.services.close()
    second.services.close()


async def test_gauges_read_at_scrape_time_sync_async_labelled_and_failing(caplog):
    metrics = Metrics()
    depth = {"value": 3}

    async def sessions() -> dict:
        await asyncio.sleep(0)
        return {"pending": 2, "passed": 5}

    def broken() -> float:
        raise RuntimeError("db gone")

    metrics.gauge("aipbot_outbox_depth", "Messages waiting to be sent", lambda: depth["value"])
    metrics.gauge("aipbot_verification_sessions", "Sessions by state", sessions, labels=["state"])
    metrics.gauge("aipbot_intake_depth", "Updates not yet handled", broken)
    with pytest.raises(ValueError, match="already registered"):
        metrics.gauge("aipbot_outbox_depth", "again", lambda: 0)
    text = (await metrics.render()).decode()
    assert sample(text, "aipbot_outbox_depth") == 3.0
    assert sample(text, "aipbot_verification_sessions", state="pending") == 2.0
    assert sample(text, "aipbot_verification_sessions", state="passed") == 5.0
    assert "aipbot_intake_depth" not in text
    assert "gauge aipbot_intake_depth could not be read (RuntimeError)" in caplog.text
    depth["value"] = 7
    assert sample((await metrics.render()).decode(), "aipbot_outbox_depth") == 7.0


async def test_transport_metric_functions():
    metrics = Metrics()
    metrics.update_received("message")
    metrics.update_received("callback_query")
    metrics.reply_sent("sendMessage")
    metrics.telegram_error(429)
    metrics.telegram_error("network")
    text = (await metrics.render()).decode()
    assert sample(text, "aipbot_updates_total", kind="message") == 1.0
    assert sample(text, "aipbot_updates_total", kind="callback_query") == 1.0
    assert sample(text, "aipbot_replies_sent_total", method="sendMessage") == 1.0
    assert sample(text, "aipbot_telegram_errors_total", code="429") == 1.0
    assert sample(text, "aipbot_telegram_errors_total", code="network") == 1.0


class FailingPlugin:
    @hookimpl
    def aipbot_commands(self):
        from core.contract.chat import Command
        from core.contract.errors import UserFacingError

        async def broken(ctx):
            raise RuntimeError("a bug")

        async def refused(ctx):
            raise UserFacingError("told", key="error.generic")

        return [Command("broken", "error.generic", broken), Command("refused", "error.generic", refused)]


async def test_commands_are_counted_by_outcome_ok_user_error_and_error():
    from tests.harness import Harness

    async with Harness({"plugins": {"failing": {}}}, extra_plugins={"failing": FailingPlugin()}) as bot:
        await bot.send("/help")
        await bot.send("/broken")
        await bot.send("/refused")
        text = (await bot.app.metrics.render()).decode()
    assert sample(text, "aipbot_commands_total", command="help", outcome="ok") == 1.0
    assert sample(text, "aipbot_commands_total", command="broken", outcome="error") == 1.0
    assert sample(text, "aipbot_commands_total", command="refused", outcome="user_error") == 1.0


def test_token_labels_drop_the_credential_fingerprint():
    assert token_label("baidu:3f2a9c0d1e2b4a5f") == "baidu"
    assert token_label("webank:0123456789abcdef:sign_ticket") == "webank:sign_ticket"


# -- bad input, the route registry, the access log ------------------------------------------------------------


async def test_unknown_paths_wrong_methods_and_big_bodies_get_short_clear_answers(web):
    transport, base = await web(server={"max_body_kb": 1})

    async def echo(request):
        return PlainTextResponse(f"{len(await request.body())} bytes\n")

    transport.app.web.route("/echo", echo, methods=["POST"])
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.get(base + "/nowhere")
        assert (missing.status_code, missing.text) == (404, "not found\n")
        wrong = await client.post(base + "/healthz")
        assert (wrong.status_code, wrong.text) == (405, "method not allowed\n")
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
        assert (await client.get(base + "/echo")).status_code == 405
        assert (await client.post(base + "/echo", content=b"x" * 1000)).text == "1000 bytes\n"
        big = await client.post(base + "/echo", content=b"x" * 4000)  # Content-Length over the limit
        assert (big.status_code, big.text) == (413, "request body too large (limit 1 KB)\n")

        async def chunks():
            for _ in range(4):
                yield b"x" * 1000

        streamed = await client.post(base + "/echo", content=chunks())  # chunked: no Content-Length
        assert streamed.status_code == 413
        assert (await client.post(base + "/healthz", content=b"x" * 4000)).status_code == 413


async def test_an_endpoint_that_raises_answers_500_and_the_traceback_stays_in_the_log(web, caplog):
    transport, base = await web()

    async def boom(request):
        raise RuntimeError("secret detail")

    transport.app.web.route("/boom", boom)
    caplog.set_level(logging.INFO)
    answer = await get(base + "/boom")
    assert (answer.status_code, answer.text) == (500, "internal error\n")
    assert "secret detail" not in answer.text
    assert "RuntimeError: secret detail" in caplog.text  # logged once, with its traceback
    assert (await get(base + "/healthz")).status_code == 200  # the server goes on


async def test_the_access_log_has_the_path_but_never_the_query_string(web, caplog):
    _, base = await web()
    caplog.set_level(logging.DEBUG, logger="aipbot.web.access")
    await get(base + "/healthz?token=hunter2-secret-value")
    await get(base + "/nowhere?access_token=hunter2-secret-value")
    lines = [r.getMessage() for r in caplog.records if r.name == "aipbot.web.access"]
    assert any(line.startswith("GET /healthz 200 ") for line in lines)
    assert any(line.startswith("GET /nowhere 404 ") and line.endswith("127.0.0.1") for line in lines)
    assert "hunter2" not in caplog.text


class RoutePlugin:
    @hookimpl
    def aipbot_web_routes(self, config, services):
        return [Route("/hello/{name}", self.hello)]

    async def hello(self, request):
        return PlainTextResponse(f"hello {request.path_params['name']}\n")


class ClashingPlugin:
    @hookimpl
    def aipbot_web_routes(self):
        return [Route("/healthz", RoutePlugin().hello)]


async def test_a_plugin_serves_its_routes_through_the_hook(web):
    _, base = await web(extra_plugins={"greeter": RoutePlugin()}, plugins={"greeter": {}})
    answer = await get(base + "/hello/ada")
    assert (answer.status_code, answer.text) == (200, "hello ada\n")


def test_a_plugin_route_on_a_taken_path_stops_start_up_naming_both():
    config = validate({"storage": {"path": ":memory:"}, "plugins": {"clash": {}}})
    with pytest.raises(ConfigError, match=r"^web route /healthz: registered by core and by plugins.clash$"):
        App(config, {"clash": ClashingPlugin()})


async def test_the_server_stops_with_the_bot_and_frees_its_port(web, start_bot):
    transport, base = await web()
    port = transport.app.web.port
    await start_bot.stop()
    with pytest.raises(httpx.ConnectError):
        await get(base + "/healthz")
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


async def test_a_port_in_use_is_a_config_error_at_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App(validate({"storage": {"path": ":memory:"}, "server": {"port": port}}), transport=RecordingTransport())
        with pytest.raises(ConfigError, match=rf"^server.port: cannot listen on 127.0.0.1:{port} \(the port is "):
            app.start()
        app.stop()
        app.services.close()  # start stopped before the plugins: stop() has nothing of theirs to undo


# -- real processes ------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, server: str, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"plugins: {{}}\nstorage: {{path: {tmp_path / 'db.sqlite3'}}}\n{server}{extra}", encoding="utf-8")
    return path


def bot_process(config: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(config.parent), "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=config.parent,
        env=env,
        **kwargs,
    )


def wait_healthy(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the web server did not come up")


def test_the_console_bot_serves_and_stops_cleanly_at_end_of_input(tmp_path):
    port = free_port()
    config = write_config(tmp_path, f"server: {{listen: 127.0.0.1, port: {port}}}\n")
    process = bot_process(config, "--console", stdin=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"] == {"config": "ok", "store": "ok", "state": "ok"}
        assert httpx.get(base + "/metrics", timeout=5).status_code == 200
        out, err = process.communicate("/help\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "bot> Commands:" in out
    assert "Traceback" not in err and "was destroyed" not in err, err
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=2)


def test_an_address_this_machine_does_not_have_is_a_config_error_naming_listen():
    app = App(validate({"storage": {"path": ":memory:"}, "server": {"listen": "192.0.2.1", "port": 0}}))
    try:
        with pytest.raises(ConfigError, match=r"^server.listen: cannot listen on 192.0.2.1:0 \("):
            app.web.bind()
    finally:
        app.services.close()


def test_a_port_in_use_stops_the_bot_with_one_line_and_exit_code_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"server: {{port: {port}}}\n")
        process = bot_process(config, "--console", stdin=subprocess.DEVNULL)
        out, err = process.communicate(timeout=60)
        check = bot_process(config, "--check", stdin=subprocess.DEVNULL)  # --check does not listen
        check.communicate(timeout=60)
    assert check.returncode == 0
    assert process.returncode == 2
    assert err == (
        f"aipbot: configuration error: server.port: cannot listen on 127.0.0.1:{port} (the port is already in use)\n"
    )
    assert out == ""


def test_the_telegram_bot_serves_and_stops_cleanly_on_sigterm(tmp_path, fake_telegram):
    port = free_port()
    telegram = (
        f"telegram: {{token: '{fake_telegram.TOKEN}', base_url: '{fake_telegram.base_url}',"
        f" base_file_url: '{fake_telegram.base_file_url}', poll_timeout: 1}}\n"
    )
    config = write_config(tmp_path, f"server: {{port: {port}, ready_cache: 0}}\n", telegram)
    process = bot_process(config, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["telegram"] == "ok"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "was destroyed" not in err and "Task" not in err, err
    assert fake_telegram.TOKEN not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=2)


async def test_metrics_show_the_outbox_and_intake_depths(web, fake_telegram):
    transport, base = await web(telegram={"send_retries": 0}, outbox={"backoff": 3600})
    text = (await get(base + "/metrics")).text
    assert sample(text, "aipbot_outbox_depth") == 0 and sample(text, "aipbot_intake_depth") == 0
    fake_telegram.fail("sendMessage", times=5, kind="5xx")
    await transport.app.services.outbox.put(1001, Reply("later"), key="t:1")  # fails; retried in an hour
    assert sample((await get(base + "/metrics")).text, "aipbot_outbox_depth") == 1
