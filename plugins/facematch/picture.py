"""The reply picture: the two compared faces side by side, the score under them.

Language-neutral on purpose (the caption carries the words): two square tiles numbered 1 and 2, the
score in large figures, and a 0–100 bar with a tick at the threshold, green when the faces count as the
same person and red when not. A tile without a face box shows the whole photo. Rendered in memory
only; the JPEG bytes go straight into the reply.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from plugins.facematch.engines import Box

TILE = 320
GAP = 16
SCORE_SIZE = 56
LABEL_SIZE = 22
BACKGROUND = (250, 250, 250)
PAD = (200, 200, 200)
TEXT = (20, 20, 20)
SAME = (27, 127, 55)
DIFFERENT = (198, 40, 40)
BAR_EMPTY = (220, 220, 220)


def face_tile(image: Image.Image, box: Box | None, size: int = TILE) -> Image.Image:
    """A ``size``×``size`` tile: the face in ``box`` with a margin around it, or the whole image."""
    if box is None:
        tile = Image.new("RGB", (size, size), PAD)
        whole = image.copy()
        whole.thumbnail((size, size), Image.LANCZOS)
        tile.paste(whole, ((size - whole.width) // 2, (size - whole.height) // 2))
        return tile
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * 1.8  # the face and some hair, chin and ears
    cx, cy = (left + right) / 2, (top + bottom) / 2
    crop_box = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    crop = _crop_padded(image, crop_box)
    return crop.resize((size, size), Image.LANCZOS)


def render_pair(
    image_a: Image.Image,
    box_a: Box | None,
    image_b: Image.Image,
    box_b: Box | None,
    score: float,
    threshold: float,
) -> bytes:
    """The side-by-side JPEG: tiles 1 and 2, the score (``87 / 100``) and a bar with the threshold tick."""
    width = 2 * TILE + 3 * GAP
    height = GAP + TILE + GAP + SCORE_SIZE + GAP + 14 + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    colour = SAME if score >= threshold else DIFFERENT
    label_font = _font(LABEL_SIZE)
    for index, (image, box) in enumerate(((image_a, box_a), (image_b, box_b))):
        x = GAP + index * (TILE + GAP)
        canvas.paste(face_tile(image, box), (x, GAP))
        badge = (x + 6, GAP + 6, x + 6 + LABEL_SIZE + 10, GAP + 6 + LABEL_SIZE + 10)
        draw.rectangle(badge, fill=(255, 255, 255), outline=TEXT)
        draw.text(
            ((badge[0] + badge[2]) / 2, (badge[1] + badge[3]) / 2),
            str(index + 1),
            font=label_font,
            fill=TEXT,
            anchor="mm",
        )
    y = GAP + TILE + GAP
    draw.text((width / 2, y + SCORE_SIZE / 2), f"{score:.1f} / 100", font=_font(SCORE_SIZE), fill=colour, anchor="mm")
    bar_top = y + SCORE_SIZE + GAP
    bar = (GAP, bar_top, width - GAP, bar_top + 14)
    draw.rectangle(bar, fill=BAR_EMPTY)
    span = bar[2] - bar[0]
    draw.rectangle((bar[0], bar[1], bar[0] + round(span * max(0.0, min(score, 100.0)) / 100), bar[3]), fill=colour)
    tick = bar[0] + round(span * threshold / 100)
    draw.rectangle((tick - 1, bar[1] - 5, tick + 1, bar[3] + 5), fill=TEXT)
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _crop_padded(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.crop(box)``, with the part outside the image filled with a neutral grey."""
    left, top, right, bottom = box
    crop = Image.new("RGB", (right - left, bottom - top), PAD)
    inside = (max(0, left), max(0, top), min(image.width, right), min(image.height, bottom))
    if inside[2] > inside[0] and inside[3] > inside[1]:
        crop.paste(image.crop(inside), (inside[0] - left, inside[1] - top))
    return crop


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at ``size`` px (the tiny bitmap font only without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()
