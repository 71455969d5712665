"""The in-process bot of the tests: the package's test kit (:mod:`core.contract.testing`), which third-party
plugins use too, plus what only the bot's own tests need.

    async with Harness({"plugins": {"ocr": {"enabled": True, "engine": "local"}}}) as bot:
        replies = await bot.send("/ocr", photos=[png_bytes])       # -> list[Reply] sent in answer
        replies = await bot.press(replies[0].buttons[0][0])         # a button press
"""

from __future__ import annotations

from core.contract.i18n import core_catalogue
from core.contract.testing import BASE_CONFIG, Harness, RecordingTransport, merge

__all__ = ["BASE_CONFIG", "Harness", "RecordingTransport", "assert_in_both_languages", "merge"]


def assert_in_both_languages(keys: object) -> None:
    """Every catalogue key in ``keys`` has an English and a Chinese text (the core catalogue)."""
    catalogue = core_catalogue()
    for key in keys:  # type: ignore[attr-defined]
        assert key in catalogue.keys("en") and key in catalogue.keys("zh"), key
