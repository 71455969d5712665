"""Draw the recognised lines onto the photo, for ``/ocr boxes``."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from plugins.ocr.layout import Line

#: Outline colour (a red that stands out on paper and on screens).
COLOUR = (230, 30, 60)


def annotate(image: Image.Image, lines: Sequence[Line], quality: int = 85) -> bytes:
    """A JPEG of ``image`` with each line of ``lines`` outlined; ``image`` itself is not changed.

    Line outlines must be in the coordinates of ``image``. Lines without a position are skipped.
    """
    canvas = image.convert("RGB")  # a copy, even when already RGB
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    for line in lines:
        if line.quad is None:
            continue
        points = [(round(x), round(y)) for x, y in line.quad]
        draw.line([*points, points[0]], fill=COLOUR, width=width, joint="curve")
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=quality)
    return out.getvalue()
