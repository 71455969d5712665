"""Webhook mode: the fake Bot API POSTs updates to the bot's own web server (real HTTP on 127.0.0.1).

The endpoint's checks (source network, secret, size, shape), recording before the 200, Telegram's redeliveries
answered once, a 500 when the journal cannot write, the replay of an update acknowledged just before a shutdown,
the readiness and metrics endpoints in webhook mode, and switching back to polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.infra.redact import RedactingFilter
from core.infra.web import trusted_hosts
from core.runtime.config import ConfigError, validate
from core.telegram.botapi import ALLOWED_UPDATES
from core.telegram.webhook import derive_secret, networks, parse_update
from tests import probe_plugin
from tests.harness import merge
from tests.servers import free_port
from tests.test_nothing_lost import journal_when_idle, texts_to
from tests.test_web import sample

DATA = Path(__file__).resolve().parent.parent / "examples"
LOCAL = ["127.0.0.1/32"]  # the fake delivers from 127.0.0.1: allowed only because the test says so
SECRET = "test-secret_0123456789"


def webhook_config(fake, tmp_path: Path, port: int, telegram: dict | None = None, **overrides) -> dict:
    telegram = dict(telegram or {})
    networks_wanted = telegram.pop("webhook_source_networks", LOCAL)
    base = {
        "telegram": {
            "token": fake.TOKEN,
            "base_url": fake.base_url,
            "base_file_url": fake.base_file_url,
            "mode": "webhook",
            "album_wait": 0.3,
            **({} if networks_wanted == "default" else {"webhook_source_networks": networks_wanted}),
            **telegram,
        },
        "access": {"admins": [42]},
        "storage": {"path": str(tmp_path / "bot.sqlite3")},
        "plugins": {"probe": {}},
        "server": {"listen": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
    }
    return validate(merge(base, overrides))


@pytest.fixture
def hook(fake_telegram, start_bot, tmp_path):
    """``await hook(telegram={...}, **config)``: the bot in webhook mode (probe plugin, database in tmp_path) on a
    free port; returns the transport, with ``.base`` the server's URL and ``.hook_url`` the webhook's."""
    port = free_port()

    async def start(telegram: dict | None = None, extra: dict | None = None, **overrides):
        config = webhook_config(fake_telegram, tmp_path, port, telegram, **overrides)
        transport = await start_bot(config, {"probe": probe_plugin, **(extra or {})})
        transport.base = f"http://127.0.0.1:{port}"
        transport.hook_url = transport.base + config["telegram"]["webhook_path"]
        return transport

    return start


def journal(tmp_path: Path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    try:
        return db.execute("SELECT update_id, done FROM intake ORDER BY update_id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def update(update_id: int, text: str = "/echo direct", user_id: int = 1001) -> dict:
    who = {"id": user_id, "is_bot": False, "first_name": "Ada", "language_code": "en"}
    message = {
        "message_id": update_id,
        "date": 1_700_000_000,
        "chat": {"id": user_id, "type": "private", "first_name": "Ada"},
        "from": who,
        "text": text,
    }
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, "message": message}


async def post(url: str, body: bytes | dict | list, secret: str | None = SECRET, **headers: str) -> httpx.Response:
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, content=content, headers={"Content-Type": "application/json", **headers})


async def metric(base: str, name: str, **labels: str) -> float | None:
    async with httpx.AsyncClient(timeout=10) as client:
        return sample((await client.get(base + "/metrics")).text, name, **labels)


# ---------------------------------------------------------------------------------------------- configuration
def test_webhook_mode_needs_the_server_and_its_public_url():
    with pytest.raises(ConfigError, match=r"^telegram.mode: webhook needs the web server"):
        validate({"telegram": {"mode": "webhook"}})
    with pytest.raises(ConfigError, match=r"^telegram.mode: webhook needs the web server"):
        validate({"telegram": {"mode": "webhook"}, "server": {"enabled": False, "public_url": "https://b.example"}})
    with pytest.raises(ConfigError, match=r"^server.public_url: is required in webhook mode"):
        validate({"telegram": {"mode": "webhook"}, "server": {"port": 0}})
    with pytest.raises(ConfigError, match=r"^telegram.mode: must be one of polling, webhook"):
        validate({"telegram": {"mode": "push"}})
    ok = validate({"telegram": {"mode": "webhook"}, "server": {"public_url": "https://bot.example.com"}})
    assert ok["telegram"]["mode"] == "webhook"


def test_webhook_keys_defaults_and_bad_values():
    telegram = validate({})["telegram"]
    assert telegram["mode"] == "polling"
    assert telegram["webhook_path"] == "/telegram/webhook"
    assert telegram["webhook_secret"] == ""
    assert telegram["webhook_max_connections"] == 40
    assert telegram["webhook_max_body_kb"] == 256
    assert telegram["webhook_source_networks"] == ["149.154.160.0/20", "91.108.4.0/22"]
    assert telegram["trusted_proxies"] == []
    assert telegram["webhook_delete_on_stop"] is False
    with pytest.raises(ConfigError, match=r"^telegram.webhook_secret: must be 1-256 characters"):
        validate({"telegram": {"webhook_secret": "has spaces"}})
    with pytest.raises(ConfigError, match=r"^telegram.webhook_source_networks\[1\]: not an IP network"):
        validate({"telegram": {"webhook_source_networks": ["10.0.0.0/8", "telegram"]}})
    with pytest.raises(ConfigError, match=r"^telegram.trusted_proxies\[0\]: not an IP network"):
        validate({"telegram": {"trusted_proxies": ["proxy.local"]}})
    with pytest.raises(ConfigError, match=r"^telegram.webhook_path: must be a plain path"):
        validate({"telegram": {"webhook_path": "telegram"}})
    with pytest.raises(ConfigError, match=r"^telegram.webhook_max_connections: must be at most 100"):
        validate({"telegram": {"webhook_max_connections": 101}})


def test_config_yaml_documents_every_telegram_key():
    text = (Path(__file__).resolve().parent.parent / "config.yaml").read_text(encoding="utf-8")
    block = text[text.index("\ntelegram:\n") : text.index("\nlanguage:\n")]
    documented = yaml.safe_load(block)["telegram"]
    assert set(documented) == set(validate({})["telegram"])
    defaults = {k: v for k, v in documented.items() if k not in ("token", "webhook_secret")}  # from the environment
    assert validate({"telegram": defaults})["telegram"] == validate({})["telegram"]


def test_the_derived_secret_is_stable_allowed_by_telegram_and_does_not_show_the_token():
    token = "123456789:AAE" + "x" * 32
    secret = derive_secret(token)
    assert secret == derive_secret(token)  # every process of one bot agrees
    assert secret != derive_secret(token[:-1] + "y")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret) and len(secret) == 43
    assert token not in secret and "AAE" not in secret


# ---------------------------------------------------------------------------------------------- the checks
def test_parse_update_wants_a_json_object_with_an_integer_update_id():
    assert parse_update(b'{"update_id": 5, "message": {}}')[0] == {"update_id": 5, "message": {}}
    assert parse_update(b"not json") == (None, "the body is not JSON")
    assert parse_update(b"\xff\xfe") == (None, "the body is not JSON")
    assert parse_update(b"[" * 100_000) == (None, "the body is not JSON")
    assert parse_update(b"[1, 2]") == (None, "the body is not a JSON object")
    for body in (b"{}", b'{"update_id": "5"}', b'{"update_id": true}', b'{"update_id": 1.5}'):
        assert parse_update(body) == (None, "no integer update_id"), body


async def forwarded_client(peer: str, forwarded: list[str], proxies: list[str]) -> str:
    """The client the server's proxy layer (uvicorn's ProxyHeadersMiddleware with :func:`trusted_hosts`) makes of a
    request from ``peer`` carrying the ``X-Forwarded-For`` values ``forwarded``."""
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"][0]

    layer = ProxyHeadersMiddleware(app, trusted_hosts=trusted_hosts(proxies)) if proxies else app
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    await layer({"type": "http", "client": (peer, 1234), "headers": headers}, None, None)
    return seen["client"]


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies():
    proxy = ["127.0.0.1/32", "10.0.0.0/8"]
    assert await forwarded_client("149.154.167.1", ["6.6.6.6"], []) == "149.154.167.1"  # no proxy trusted
    assert await forwarded_client("127.0.0.1", ["149.154.167.1"], []) == "127.0.0.1"
    assert await forwarded_client("127.0.0.1", ["149.154.167.1"], proxy) == "149.154.167.1"
    # a client may send its own X-Forwarded-For: only the hop the trusted proxy appended counts
    assert await forwarded_client("127.0.0.1", ["149.154.167.1, 203.0.113.9"], proxy) == "203.0.113.9"
    assert await forwarded_client("127.0.0.1", ["203.0.113.9, 149.154.167.1, 10.1.2.3"], proxy) == "149.154.167.1"
    assert await forwarded_client("127.0.0.1", ["149.154.167.1", "10.1.2.3"], proxy) == "149.154.167.1"
    assert await forwarded_client("127.0.0.1", [], proxy) == "127.0.0.1"
    assert await forwarded_client("::ffff:127.0.0.1", ["149.154.167.1"], proxy) == "149.154.167.1"  # dual stack
    garbage = await forwarded_client("127.0.0.1", ["garbage"], proxy)
    assert garbage == "garbage"  # not an address: the webhook's source check refuses it


# ---------------------------------------------------------------------------------------------- end to end
async def test_start_sets_the_webhook_and_an_update_is_answered(hook, fake_telegram, caplog):
    caplog.set_level(logging.DEBUG)  # PTB logs every call's parameters at DEBUG: the secret is redacted there too
    caplog.handler.addFilter(RedactingFilter())  # as bot.py installs it on every handler
    transport = await hook()
    (call,) = fake_telegram.calls_of("setWebhook")
    assert call.params["url"] == transport.hook_url
    assert call.params["secret_token"] == derive_secret(fake_telegram.TOKEN)  # no webhook_secret: derived
    assert call.params["allowed_updates"] == ALLOWED_UPDATES
    assert call.params["max_connections"] == 40
    assert call.params["drop_pending_updates"] is False
    assert not fake_telegram.calls_of("getUpdates")
    fake_telegram.user_sends_text("/echo pushed")
    assert (await fake_telegram.bot_replied()).text == "hi pushed"
    (delivery,) = await fake_telegram.webhook_done(1)
    assert delivery.status == 200 and delivery.url == transport.hook_url
    assert "secret_token" in caplog.text  # PTB's DEBUG line about setWebhook is there …
    assert derive_secret(fake_telegram.TOKEN) not in caplog.text  # … without the secret
    assert fake_telegram.TOKEN not in caplog.text


async def test_the_configured_secret_is_the_one_set(hook, fake_telegram):
    await hook(telegram={"webhook_secret": SECRET, "webhook_max_connections": 5})
    assert fake_telegram.webhook["secret_token"] == SECRET
    assert fake_telegram.webhook["max_connections"] == 5


async def test_a_missing_or_wrong_secret_is_refused_and_nothing_is_processed(hook, fake_telegram, tmp_path):
    transport = await hook(telegram={"webhook_secret": SECRET})
    missing = await post(transport.hook_url, update(900001), secret=None)
    assert (missing.status_code, missing.text) == (401, "unauthorized: X-Telegram-Bot-Api-Secret-Token is missing\n")
    wrong = await post(transport.hook_url, update(900002), secret=SECRET[:-1] + "X")
    assert (wrong.status_code, wrong.text) == (403, "forbidden: wrong X-Telegram-Bot-Api-Secret-Token\n")
    empty = await post(transport.hook_url, update(900003), secret="")
    assert empty.status_code == 403
    # Telegram itself with a stale secret (another bot's webhook on our URL): refused every time, then given up
    fake_telegram.webhook["secret_token"] = "someone-elses-secret"
    fake_telegram.webhook_retries = 1
    fake_telegram.user_sends_text("/echo spoofed")
    deliveries = await fake_telegram.webhook_done(1)
    assert [d.status for d in deliveries] == [403, 403]
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1001) == []  # no reply sent
    assert journal(tmp_path) == []  # nothing journaled
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="forbidden") == 4.0
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="unauthorized") == 1.0


async def test_a_repeated_update_id_is_answered_200_and_handled_once(hook, fake_telegram, tmp_path):
    transport = await hook(telegram={"webhook_secret": SECRET})
    first = await post(transport.hook_url, update(700001, "/echo once"))
    again = await post(transport.hook_url, update(700001, "/echo once"))  # Telegram's redelivery
    assert (first.status_code, again.status_code) == (200, 200)
    assert (await fake_telegram.bot_replied()).text == "hi once"
    both = await asyncio.gather(*(post(transport.hook_url, update(700002, "/echo twice")) for _ in range(2)))
    assert [r.status_code for r in both] == [200, 200]
    assert (await fake_telegram.bot_replied()).text == "hi twice"
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1001) == ["hi once", "hi twice"]
    assert [row[0] for row in await journal_when_idle(tmp_path)] == [700001, 700002]  # one row each
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="recorded") == 2.0
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="duplicate") == 2.0


async def test_bad_bodies_get_short_answers_and_are_not_recorded(hook, tmp_path):
    transport = await hook(telegram={"webhook_secret": SECRET, "webhook_max_body_kb": 1})
    cases = [
        (b"hello", 400, "bad request: the body is not JSON\n"),
        (b"[1, 2, 3]", 400, "bad request: the body is not a JSON object\n"),
        (b'{"message": {}}', 400, "bad request: no integer update_id\n"),
        (b'{"update_id": "12"}', 400, "bad request: no integer update_id\n"),
        (b'{"update_id": 1, "pad": "' + b"x" * 2000 + b'"}', 413, "request body too large (limit 1 KB)\n"),
    ]
    for body, status, text in cases:
        answer = await post(transport.hook_url, body)
        assert (answer.status_code, answer.text) == (status, text), body[:40]
    async with httpx.AsyncClient(timeout=10) as client:
        got = await client.get(transport.hook_url)
        assert got.status_code == 405 and got.headers["allow"] == "POST"

        async def chunks():  # chunked: no Content-Length, the limit holds while it is read
            for _ in range(3):
                yield b"x" * 600

        streamed = await client.post(
            transport.hook_url, content=chunks(), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert streamed.status_code == 413
    assert journal(tmp_path) == []
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="bad_request") == 4.0


async def test_a_photo_is_downloaded_and_handled_in_webhook_mode(hook, fake_telegram):
    await hook()
    image = (DATA / "text" / "en_line.png").read_bytes()
    fake_telegram.user_sends_photo(image, caption="/snap")
    reply = await fake_telegram.bot_replied()
    assert reply.text == f"snap got 1 photos [{len(image)}] args=[]"


@pytest.mark.slow
async def test_ocr_of_a_photo_is_answered_in_webhook_mode(hook, fake_telegram):
    await hook(plugins={"probe": {}, "ocr": {"engine": "local"}})
    fake_telegram.user_sends_photo((DATA / "text" / "en_line.png").read_bytes(), caption="/ocr")
    reply = await fake_telegram.bot_replied(timeout=120)
    expected = json.loads((DATA / "text" / "expected.json").read_text(encoding="utf-8"))["en_line.png"]
    flat = "".join(reply.text.split())
    assert all(word in flat for word in " ".join(expected).split()), reply.text


async def test_healthz_readyz_and_metrics_in_webhook_mode(hook, fake_telegram):
    transport = await hook()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(transport.base + "/healthz")).text == "ok\n"
        ready = await client.get(transport.base + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"config": "ok", "store": "ok", "state": "ok", "telegram": "ok", "webhook": "ok"}
    for n in range(3):
        fake_telegram.user_sends_text(f"/echo {n}")
        await fake_telegram.bot_replied()
    await fake_telegram.webhook_done(3)
    assert await metric(transport.base, "aipbot_webhook_requests_total", outcome="recorded") == 3.0
    for _ in range(50):  # counted by kind when handled, just after the reply
        if await metric(transport.base, "aipbot_updates_total", kind="message") == 3.0:
            break
        await asyncio.sleep(0.05)
    assert await metric(transport.base, "aipbot_updates_total", kind="message") == 3.0


async def test_readyz_names_the_webhook_while_telegram_refuses_set_webhook(hook, fake_telegram, caplog):
    fake_telegram.fail("setWebhook", times=1, kind="400", description="bad webhook: HTTPS url must be provided")
    transport = await hook()
    async with httpx.AsyncClient(timeout=10) as client:
        ready = await client.get(transport.base + "/readyz")
    assert ready.status_code == 503 and ready.json()["not_ready"] == ["webhook"]
    assert "setWebhook http://127.0.0.1:" in caplog.text and "bad webhook" in caplog.text.lower()
    for _ in range(60):  # the retry task tries again in the background (first pause 2 s)
        if fake_telegram.webhook is not None:
            break
        await asyncio.sleep(0.1)
    assert fake_telegram.webhook is not None


# ---------------------------------------------------------------------------------------------- source networks
def asgi_client(transport, host: str) -> httpx.AsyncClient:
    """A client whose requests reach the bot's web app as if from ``host`` (the TCP peer address)."""
    asgi = httpx.ASGITransport(app=transport.app.web.asgi, client=(host, 40000))
    return httpx.AsyncClient(transport=asgi, base_url="http://bot")


async def test_only_telegrams_networks_may_post_by_default(hook, fake_telegram):
    transport = await hook(telegram={"webhook_secret": SECRET, "webhook_source_networks": "default"})
    assert transport.webhook.source_networks == networks(["149.154.160.0/20", "91.108.4.0/22"])
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    path = "/telegram/webhook"
    async with asgi_client(transport, "149.154.167.220") as telegram:
        assert (await telegram.post(path, json=update(800001, "/echo dc"), headers=headers)).status_code == 200
    async with asgi_client(transport, "91.108.4.9") as telegram:
        assert (await telegram.post(path, json=update(800002, "/echo dc2"), headers=headers)).status_code == 200
    async with asgi_client(transport, "203.0.113.9") as stranger:
        refused = await stranger.post(path, json=update(800003, "/echo no"), headers=headers)
        assert (refused.status_code, refused.text) == (403, "forbidden: not from Telegram's networks\n")
    async with asgi_client(transport, "127.0.0.1") as local:  # loopback is not Telegram unless configured
        forged = {**headers, "X-Forwarded-For": "149.154.167.220"}  # and not believed without trusted_proxies
        assert (await local.post(path, json=update(800004, "/echo no"), headers=forged)).status_code == 403
    assert {(await fake_telegram.bot_replied()).text for _ in range(2)} == {"hi dc", "hi dc2"}
    await asyncio.sleep(0.2)
    assert len(texts_to(fake_telegram, 1001)) == 2


async def test_behind_a_trusted_proxy_x_forwarded_for_names_the_client(hook, fake_telegram):
    transport = await hook(
        telegram={"webhook_secret": SECRET, "webhook_source_networks": "default", "trusted_proxies": ["127.0.0.1/32"]}
    )
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    path = "/telegram/webhook"
    async with asgi_client(transport, "127.0.0.1") as proxy:
        telegram = {**headers, "X-Forwarded-For": "149.154.167.220"}
        assert (await proxy.post(path, json=update(810001, "/echo via"), headers=telegram)).status_code == 200
        stranger = {**headers, "X-Forwarded-For": "203.0.113.9"}
        assert (await proxy.post(path, json=update(810002, "/echo no"), headers=stranger)).status_code == 403
        spoof = {**headers, "X-Forwarded-For": "149.154.167.220, 203.0.113.9"}  # forged left part, real right
        assert (await proxy.post(path, json=update(810003, "/echo no"), headers=spoof)).status_code == 403
        assert (await proxy.post(path, json=update(810004, "/echo no"), headers=headers)).status_code == 403
    async with asgi_client(transport, "198.51.100.7") as direct:  # not the proxy: its header is not read
        forged = {**headers, "X-Forwarded-For": "149.154.167.220"}
        assert (await direct.post(path, json=update(810005, "/echo no"), headers=forged)).status_code == 403
    assert (await fake_telegram.bot_replied()).text == "hi via"
    await asyncio.sleep(0.2)
    assert texts_to(fake_telegram, 1001) == ["hi via"]


async def test_an_empty_source_network_list_accepts_any_address(hook, fake_telegram):
    transport = await hook(telegram={"webhook_secret": SECRET, "webhook_source_networks": []})
    async with asgi_client(transport, "203.0.113.9") as anyone:
        answer = await anyone.post(
            "/telegram/webhook", json=update(820001, "/echo any"), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
    assert answer.status_code == 200
    assert (await fake_telegram.bot_replied()).text == "hi any"


# ---------------------------------------------------------------------------------------------- nothing lost
async def test_a_journal_that_cannot_write_answers_500_and_telegram_delivers_again(hook, fake_telegram, monkeypatch):
    transport = await hook()
    real = transport.intake.receive
    failures = []

    async def broken(updates):
        if not failures:
            failures.append(updates)
            raise sqlite3.OperationalError("database is locked")
        return await real(updates)

    transport.webhook.receive = broken
    fake_telegram.user_sends_text("/echo later")
    assert (await fake_telegram.bot_replied()).text == "hi later"
    deliveries = await fake_telegram.webhook_done(1)
    assert [d.status for d in deliveries] == [500, 200]
    await asyncio.sleep(0.2)
    assert texts_to(fake_telegram, 1001) == ["hi later"]


async def test_an_update_acknowledged_just_before_a_shutdown_is_answered_after_the_restart(
    hook, fake_telegram, start_bot, monkeypatch, tmp_path
):
    monkeypatch.setattr("core.runtime.roles.STOP_WAIT", 0.2)
    transport = await hook()
    started = asyncio.Event()

    async def slow(ctx):
        started.set()
        await asyncio.sleep(30)  # cut off by the shutdown
        await ctx.reply("never")

    transport.app.router.commands["echo"].handler = slow
    fake_telegram.user_sends_text("/echo survive")
    (delivery,) = await fake_telegram.webhook_done(1)
    assert delivery.status == 200  # acknowledged: Telegram will not send it again
    await asyncio.wait_for(started.wait(), 10)
    await start_bot.stop()
    assert [done for _, done in journal(tmp_path)] == [None]  # recorded, not handled
    assert fake_telegram.webhook is not None  # not deleted at stop (the default)

    await hook()  # same database: replayed before anything new
    assert (await fake_telegram.bot_replied()).text == "hi survive"
    await asyncio.sleep(0.3)
    assert texts_to(fake_telegram, 1001) == ["hi survive"]
    assert len(fake_telegram.deliveries) == 1  # handled from the journal, not from a redelivery


async def test_an_update_arriving_while_the_bot_cannot_take_it_gets_503_and_comes_again(hook, fake_telegram, tmp_path):
    transport = await hook(telegram={"webhook_secret": SECRET})
    transport.webhook.close()  # what stop() does first (and what the endpoint is before start)
    answer = await post(transport.hook_url, update(830001))
    assert (answer.status_code, answer.text) == (503, "not ready: the bot is starting or stopping\n")
    fake_telegram.webhook_retries = 100
    fake_telegram.user_sends_text("/echo again")
    for _ in range(100):
        if fake_telegram.deliveries:
            break
        await asyncio.sleep(0.02)
    assert fake_telegram.deliveries[0].status == 503
    transport.webhook.open()  # e.g. another process, or this one started again
    assert (await fake_telegram.bot_replied()).text == "hi again"
    assert fake_telegram.deliveries[-1].status == 200
    assert len(journal(tmp_path)) == 1  # the update that got 503s, once; not the one posted directly


async def test_webhook_delete_on_stop_deletes_it_and_polling_deletes_it_first(hook, fake_telegram, start_bot):
    await hook(telegram={"webhook_delete_on_stop": True})
    assert fake_telegram.webhook is not None
    await start_bot.stop()
    assert fake_telegram.webhook is None and fake_telegram.webhook_deleted == 1

    await hook()  # set again; stopped without deleting
    await start_bot.stop()
    assert fake_telegram.webhook is not None
    fake_telegram.user_sends_text("/echo polled")  # waits at Telegram while nothing serves the webhook

    from tests.test_telegram_e2e import telegram_config

    await start_bot(telegram_config(fake_telegram), {"probe": probe_plugin})  # back to polling
    assert fake_telegram.webhook is None
    assert (await fake_telegram.bot_replied()).text == "hi polled"
    assert not any(c.error and "Conflict" in str(c.error) for c in fake_telegram.calls_of("getUpdates"))


async def test_a_webhook_set_while_polling_is_deleted_and_polling_goes_on(fake_telegram, start_bot):
    from tests.test_telegram_e2e import telegram_config

    await start_bot(telegram_config(fake_telegram), {"probe": probe_plugin})
    fake_telegram.webhook_retries = 1000  # the fake must not give the update up while it cannot deliver it
    async with fake_telegram.bot() as other:  # someone sets a webhook for the bot meanwhile
        await other.set_webhook("http://127.0.0.1:9/elsewhere")
    deleted = fake_telegram.webhook_deleted
    fake_telegram.user_sends_text("/echo still")
    for _ in range(100):  # the next getUpdates draws 409 Conflict; the webhook is deleted again
        if fake_telegram.webhook is None:
            break
        await asyncio.sleep(0.05)
    assert fake_telegram.webhook is None and fake_telegram.webhook_deleted > deleted
    assert (await fake_telegram.bot_replied(timeout=15)).text == "hi still"


@pytest.mark.parametrize("update_id", [2**63, 2**64 + 5, -1])
async def test_an_update_id_outside_telegrams_range_is_answered_200_and_dropped(hook, fake_telegram, caplog, update_id):
    transport = await hook(telegram={"webhook_secret": SECRET})
    body = {**update(1, "/echo hi"), "update_id": update_id}
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(transport.hook_url, json=body, headers=headers)
    assert (answer.status_code, answer.text) == (200, "ok\n")  # Telegram would deliver anything else again
    assert "outside Telegram's range" in caplog.text
    metrics = (await client_get(transport.base + "/metrics")).text
    assert sample(metrics, "aipbot_webhook_requests_total", outcome="out_of_range") == 1
    await asyncio.sleep(0.3)
    assert not fake_telegram.calls_of("sendMessage")  # dropped: nothing handled


async def client_get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)
