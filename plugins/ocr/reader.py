"""The synchronous recognition pipeline: image bytes in, lines in reading order out.

The plugin runs these functions in worker threads (``ctx.run_cpu`` for the local engine and image work,
``ctx.run_blocking`` for Baidu calls); the benchmark calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import images
from plugins.ocr.annotate import annotate
from plugins.ocr.engines import LocalEngine, Reading
from plugins.ocr.layout import Line, build_lines

#: Byte limit for images that stay in memory for the local engine (only the pixel limits matter there).
_LOCAL_MAX_BYTES = 256 * 1024 * 1024


def local_limits(max_side: int) -> images.Limits:
    """Image limits for the local engine: downscale to ``max_side`` on the longest side."""
    return images.Limits(max_side=max_side, max_bytes=_LOCAL_MAX_BYTES)


@dataclass
class PageResult:
    """The text of one image: lines in reading order, and what the user should know about it."""

    lines: list[Line]
    engine: str
    animated: bool = False
    annotated: bytes | None = None

    @property
    def text(self) -> str:
        """The lines joined with newlines."""
        return "\n".join(line.text for line in self.lines)


def finish(reading: Reading, prepared: images.PreparedImage, want_boxes: bool) -> PageResult:
    """Lines in reading order from an engine's reading, plus the annotated image when asked for."""
    lines = build_lines(reading.fragments)
    drawn = None
    if want_boxes and any(line.quad is not None for line in lines):
        drawn = annotate(prepared.image, lines)
    return PageResult(lines, reading.engine, prepared.animated, drawn)


def read_local(engine: LocalEngine, data: bytes, want_boxes: bool = False) -> PageResult:
    """Prepare ``data`` (raises :class:`core.errors.BadImage`) and read it with the local engine."""
    prepared = images.prepare(data, local_limits(engine.max_side))
    return finish(Reading(engine.read(prepared.image), "local"), prepared, want_boxes)


def prepare_for_baidu(data: bytes) -> images.PreparedImage:
    """``data`` checked and brought within Baidu OCR's limits (raises :class:`core.errors.BadImage`)."""
    return images.prepare(data, images.OCR_LIMITS)
