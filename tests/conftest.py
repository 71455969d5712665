"""Shared test set-up: tests talk only to fake servers on 127.0.0.1."""

import importlib.util
import os

import pytest

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(var, None)

# Fixtures of the fake servers, registered when the module exists.
pytest_plugins = [
    name
    for name in (
        "tests.fakes.baidu",
        "tests.fakes.telegram",
        "tests.fakes.webank",
        "tests.fakes.tencent",
        "tests.servers",
    )
    if importlib.util.find_spec(name) is not None
]


@pytest.fixture
async def start_bot():
    """``await start_bot(config, extra_plugins=None)`` runs the bot on the real python-telegram-bot stack
    (``config``: a validated config dict, usually pointed at the ``fake_telegram`` server) and returns its
    transport. Every bot started is stopped after the test; ``await start_bot.stop()`` stops them now
    (to simulate a restart)."""
    from core.runtime.app import App
    from core.runtime.roles import TelegramProcess

    running: list[TelegramProcess] = []

    async def start(config: dict, extra_plugins: dict | None = None) -> TelegramProcess:
        transport = TelegramProcess(App(config, extra_plugins))
        await transport.start()
        running.append(transport)
        return transport

    async def stop() -> None:
        while running:
            await running.pop().stop()

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    await stop()
