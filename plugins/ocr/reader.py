"""The synchronous recognition pipeline: image bytes in, lines in reading order out.

The plugin runs these functions in worker threads (``ctx.run_cpu`` for the local engine and image work,
``ctx.run_blocking`` for Baidu calls); the benchmark calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from core.contract.errors import ProviderMisconfigured, QuotaExhausted
from core.infra import images
from plugins.ocr.annotate import annotate
from plugins.ocr.engines import LocalEngine, Reading
from plugins.ocr.layout import Line, build_lines
from plugins.ocr.page import SMALL_TEXT

#: Errors only an admin can fix: the rest of an album (or a PDF) is not tried, and the error is left to the router
#: (which tells the user and alerts the admins).
STOP_ERRORS = (ProviderMisconfigured, QuotaExhausted)
#: Byte limit for images that stay in memory for the local engine (only the pixel limits matter there).
_LOCAL_MAX_BYTES = 256 * 1024 * 1024


def local_limits(max_side: int) -> images.Limits:
    """Image limits for the local engine: downscale to ``max_side`` on the longest side."""
    return images.Limits(max_side=max_side, max_bytes=_LOCAL_MAX_BYTES)


@dataclass
class PageResult:
    """The text of one image: lines in reading order, and what the user should know about it.

    ``notes``: catalogue keys and their parameters for what the engine could not do on this image (a limit
    it hit), shown above the text so that a partial answer is never silent.
    """

    lines: list[Line]
    engine: str
    animated: bool = False
    annotated: bytes | None = None
    notes: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The lines joined with newlines."""
        return "\n".join(line.text for line in self.lines)


def finish(reading: Reading, prepared: images.PreparedImage | images.LoadedImage, want_boxes: bool) -> PageResult:
    """Lines in reading order from an engine's reading, plus the annotated image when asked for."""
    return _result(reading, prepared.image, prepared.animated, want_boxes)


def _result(reading: Reading, image: Image.Image, animated: bool, want_boxes: bool) -> PageResult:
    lines = build_lines(reading.fragments)
    drawn = None
    if want_boxes and any(line.quad is not None for line in lines):
        drawn = annotate(image, lines)
    return PageResult(lines, reading.engine, animated, drawn)


def read_image(
    engine: LocalEngine,
    image: Image.Image,
    want_boxes: bool = False,
    animated: bool = False,
    language: str | None = None,
) -> PageResult:
    """Read an RGB image with the local engine (the page turned upright first); notes for any limit hit."""
    page = engine.read_page(image, language)
    result = _result(Reading(page.fragments, "local"), page.image, animated, want_boxes)
    if page.skipped_lines:
        result.notes.append(("ocr.skipped_lines", {"n": page.skipped_lines, "limit": engine.max_lines}))
    return result


def read_local(engine: LocalEngine, data: bytes, want_boxes: bool = False, language: str | None = None) -> PageResult:
    """Decode ``data`` (raises :class:`core.contract.errors.BadImage`) and read it with the local engine.

    When the image had to be shrunk to ``max_side`` and its text came out smaller than the engine reads
    reliably, the result says so (``ocr.small_text``).
    """
    loaded = images.load(data, local_limits(engine.max_side))
    result = read_image(engine, loaded.image, want_boxes, loaded.animated, language)
    width, height = loaded.original_size
    shrunk = max(width, height) > engine.max_side
    if shrunk and result.lines and _line_height(result.lines) < SMALL_TEXT:
        result.notes.append(("ocr.small_text", {"width": width, "height": height}))
    return result


def _line_height(lines: list[Line]) -> float:
    """Median height (pixels) of the lines' outlines."""
    heights = sorted(
        max(y for _, y in line.quad) - min(y for _, y in line.quad) for line in lines if line.quad is not None
    )
    return heights[len(heights) // 2] if heights else 0.0


def prepare_for_baidu(data: bytes) -> images.PreparedImage:
    """``data`` checked and brought within Baidu OCR's limits (raises :class:`core.contract.errors.BadImage`)."""
    return images.prepare(data, images.OCR_LIMITS)
