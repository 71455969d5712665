"""Message catalogues: every user-facing string, one YAML file per language.

The core's strings live in ``core/contract/locale/en.yaml`` and ``core/contract/locale/zh.yaml``; a plugin ships its own
``locale/<lang>.yaml`` beside its code and returns it from the ``aipbot_messages`` hook (see
:func:`load_dir`). Keys are dotted (``ocr.no_text``); a plugin's keys start with its name. Texts are
``str.format`` templates. A key missing in one language falls back to English: the plugin manager logs a warning
naming what a plugin's catalogue lacks (:func:`gaps`), and the test kit (:mod:`core.contract.testing`) fails on it.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = ("en", "zh")
FALLBACK = "en"


def resolve_language(code: str | None, default: str = FALLBACK) -> str:
    """The catalogue language for a Telegram ``language_code``: ``zh`` for any ``zh*``, else English.

    ``default`` is used when the code is missing.
    """
    if not code:
        return default
    return "zh" if code.lower().startswith("zh") else "en"


def load_dir(directory: str | Path) -> dict[str, dict[str, str]]:
    """Read ``<directory>/<lang>.yaml`` for every language into ``{lang: {key: text}}``."""
    out: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        path = Path(directory) / f"{lang}.yaml"
        if path.exists():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            out[lang] = {str(k): str(v) for k, v in data.items()}
    return out


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a template fills in."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:  # an unbalanced brace: shown as it is (Catalogue.text)
        return set()


def gaps(messages: dict[str, dict[str, str]]) -> list[str]:
    """What a catalogue ``{lang: {key: text}}`` lacks: a key without a text in one of :data:`LANGUAGES`, or whose
    texts fill in different placeholders. Empty when it is complete."""
    out = []
    keys = sorted({key for lang in LANGUAGES for key in messages.get(lang, {})})
    for key in keys:
        texts = {lang: messages.get(lang, {}).get(key) for lang in LANGUAGES}
        missing = [lang for lang, text in texts.items() if text is None]
        if missing:
            out.append(f"{key}: no {'/'.join(missing)} text")
        elif len({frozenset(placeholders(text or "")) for text in texts.values()}) > 1:
            shown = ", ".join(f"{lang} {sorted(placeholders(text or ''))}" for lang, text in texts.items())
            out.append(f"{key}: different placeholders ({shown})")
    return out


class Catalogue:
    """Localised texts by language and key."""

    def __init__(self) -> None:
        self._texts: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}

    def add(self, messages: dict[str, dict[str, str]]) -> None:
        """Merge ``{lang: {key: text}}`` into the catalogue (later additions win)."""
        for lang, texts in messages.items():
            self._texts.setdefault(lang, {}).update(texts)

    def messages(self) -> dict[str, dict[str, str]]:
        """A copy of everything: ``{lang: {key: text}}``."""
        return {lang: dict(texts) for lang, texts in self._texts.items()}

    def has(self, key: str) -> bool:
        return key in self._texts[FALLBACK]

    def keys(self, lang: str) -> set[str]:
        return set(self._texts.get(lang, {}))

    def text(self, lang: str, key: str, **params: Any) -> str:
        """The text for ``key`` in ``lang`` with ``params`` filled in; the key itself if it is unknown."""
        template = self._texts.get(lang, {}).get(key) or self._texts[FALLBACK].get(key)
        if template is None:
            return key
        try:
            return template.format(**params)
        except (KeyError, IndexError, ValueError):
            return template


@functools.cache
def core_catalogue() -> Catalogue:
    """The core's own catalogue (``core/contract/locale``)."""
    catalogue = Catalogue()
    catalogue.add(load_dir(Path(__file__).parent / "locale"))
    return catalogue
