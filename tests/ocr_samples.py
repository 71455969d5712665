"""Images for the OCR tests and bench/ocr_bench.py, made at run time: Latin lines with their accents, Japanese
lines, and photographed pages (a page of ``examples/pages`` as a phone takes it: on a table, in perspective,
turned a few degrees, lit unevenly, a little blurred, JPEG at Telegram's 1280 px).

Everything is drawn in memory with Pillow and numpy, from a fixed seed: the same bytes every run.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "examples" / "pages"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
#: Noto CJK (Debian ``fonts-noto-cjk``, which ``scripts/test-packages`` installs): face 0 of the collection is
#: Japanese (``Noto Sans CJK JP``).
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")

#: Two lines per Latin language, with the letters the older models lacked (ç ñ ß ã õ …).
LATIN: dict[str, list[str]] = {
    "fr": ["Le garçon a reçu une leçon à l'école", "Où est la fenêtre ? Noël, été, déjà"],
    "de": ["Die Straße ist groß und schön", "Müller aß Äpfel, Öl und Käse"],
    "es": ["El niño pequeño comió piña", "¿Dónde está mañana? Año español"],
    "pt": ["São Paulo não é uma ilha", "Ação, coração, maçã e pão"],
    "it": ["Perché è già così tardi?", "Più città, però meno virtù"],
}
#: Japanese lines: kanji, hiragana, katakana, the long-vowel mark and Japanese punctuation.
JAPANESE: list[str] = [
    "東京都の天気は晴れです。",
    "コンビニでお弁当を買いました",
    "ひらがなとカタカナを読みます",
    "会議は午後三時から始まります",
]
#: The letters and marks each language writes beyond plain ASCII (what the recognition model must know).
ALPHABETS: dict[str, str] = {
    "fr": "àâæçéèêëîïôœùûüÿÀÂÆÇÉÈÊËÎÏÔŒÙÛÜŸ«»",
    "de": "äöüßÄÖÜẞ„“",
    "es": "áéíóúüñÁÉÍÓÚÜÑ¿¡",
    "pt": "áâãàçéêíóôõúÁÂÃÀÇÉÊÍÓÔÕÚ",
    "it": "àèéìíîòóùúÀÈÉÌÒÙ",
}


@dataclass(frozen=True)
class Sample:
    """One test image: its name, encoded bytes, the lines it shows, and the language to ask for (or None)."""

    name: str
    data: bytes
    lines: list[str]
    language: str | None = None


def png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    """``image`` as JPEG bytes."""
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def dejavu(size: int, serif: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (or Serif) at ``size``; Pillow's default font when DejaVu is not installed."""
    path = DEJAVU / ("DejaVuSerif.ttf" if serif else "DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)


def lines_image(lines: list[str], face: ImageFont.FreeTypeFont | ImageFont.ImageFont, size: int) -> Image.Image:
    """Black ``lines`` on white, one every 2 × ``size`` pixels."""
    width = max(int(face.getlength(line)) for line in lines) + 60
    image = Image.new("RGB", (width, 2 * size * len(lines) + 30), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((30, 20 + 2 * size * number), line, font=face, fill="black")
    return image


def latin_samples(size: int = 30) -> list[Sample]:
    """Two lines per Latin language in DejaVu Serif, asked for with ``/ocr <language>``."""
    face = dejavu(size, serif=True)
    return [
        Sample(f"latin_{lang}.png", png(lines_image(lines, face, size)), lines, lang) for lang, lines in LATIN.items()
    ]


def japanese_samples(size: int = 32) -> list[Sample]:
    """The Japanese lines in Noto Sans CJK JP (none when the font is not installed), asked for with ``/ocr ja``."""
    if not NOTO_CJK.exists():
        return []
    face = ImageFont.truetype(str(NOTO_CJK), size, index=0)
    return [Sample("ja_lines.png", png(lines_image(JAPANESE, face, size)), JAPANESE, "ja")]


def expected_pages() -> dict[str, list[str]]:
    """``examples/pages/expected.json``: each page's lines."""
    return json.loads((PAGES / "expected.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Shot:
    """How a phone photographs a page: degrees turned, perspective (fraction of the page size the far edge
    shrinks by), the light falling from one side (brightness at the darkest corner, 0..1), a shadow across the
    page, blur radius (pixels, at the page's own size), JPEG quality, and the seed of the paper's noise."""

    degrees: float = 3.0
    perspective: float = 0.06
    light: float = 0.6
    shadow: bool = True
    blur: float = 1.0
    quality: int = 80
    seed: int = 1


#: The photographed-page set: each page of ``examples/pages`` taken two ways.
SHOTS: dict[str, Shot] = {
    "a": Shot(degrees=3.0, perspective=0.06, light=0.6, shadow=True, blur=1.0, quality=80, seed=1),
    "b": Shot(degrees=-4.0, perspective=0.08, light=0.5, shadow=False, blur=1.3, quality=70, seed=2),
}


def photograph(page: Image.Image, shot: Shot, longest: int = 1280) -> bytes:
    """``page`` as a phone photo of it lying on a table, sent through Telegram (JPEG, ``longest`` px)."""
    rng = np.random.default_rng(shot.seed)
    page = page.convert("RGB")
    if shot.blur:
        page = page.filter(ImageFilter.GaussianBlur(shot.blur))
    width, height = page.size
    margin = round(0.08 * max(width, height))
    canvas_w, canvas_h = width + 2 * margin, height + 2 * margin
    # the table: a brownish grey with coarse noise
    table = rng.normal(0, 12, (canvas_h // 8 + 1, canvas_w // 8 + 1, 1)) + np.array([120, 105, 90])
    table_image = Image.fromarray(np.clip(table, 0, 255).astype(np.uint8)).resize((canvas_w, canvas_h))
    # perspective: the top edge (further from the camera) is narrower; then turned by ``degrees``
    inset = shot.perspective * width / 2
    corners = [
        (margin + inset, margin),
        (margin + width - inset, margin),
        (margin + width, margin + height),
        (margin, margin + height),
    ]
    centre = (canvas_w / 2, canvas_h / 2)
    angle = math.radians(shot.degrees)
    turned = [
        (
            centre[0] + (x - centre[0]) * math.cos(angle) - (y - centre[1]) * math.sin(angle),
            centre[1] + (x - centre[0]) * math.sin(angle) + (y - centre[1]) * math.cos(angle),
        )
        for x, y in corners
    ]
    source = [(0, 0), (width, 0), (width, height), (0, height)]
    coefficients = _perspective(turned, source)
    warped = page.transform((canvas_w, canvas_h), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC)
    mask = Image.new("L", page.size, 255).transform(
        (canvas_w, canvas_h), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    photo = Image.composite(warped, table_image, mask)
    # uneven light: a gradient from one corner, a soft shadow band, sensor noise
    ys, xs = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    light = 1.0 - (1.0 - shot.light) * (xs / canvas_w * 0.6 + ys / canvas_h * 0.4)
    if shot.shadow:
        band = np.exp(-(((xs - 0.7 * canvas_w) + 0.5 * (ys - canvas_h / 2)) ** 2) / (2 * (0.08 * canvas_w) ** 2))
        light = light * (1.0 - 0.35 * band)
    pixels = np.asarray(photo, dtype=np.float32) * light[:, :, None]
    pixels += rng.normal(0, 4, pixels.shape)
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    scale = longest / max(photo.size)
    if scale < 1:
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
    return jpeg(photo, shot.quality)


def _perspective(destination: list[tuple[float, float]], source: list[tuple[float, float]]) -> list[float]:
    """Pillow's eight PERSPECTIVE coefficients mapping each ``destination`` point to its ``source`` point."""
    rows = []
    for (x, y), (u, v) in zip(destination, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    matrix = np.array(rows, dtype=np.float64)
    target = np.array([c for point in source for c in point], dtype=np.float64)
    return np.linalg.solve(matrix, target).tolist()


def photographed_samples(names: list[str] | None = None, shots: list[str] | None = None) -> list[Sample]:
    """The pages of ``examples/pages`` (all, or ``names``) photographed each way of :data:`SHOTS` (or ``shots``)."""
    expected = expected_pages()
    out = []
    for name in names or sorted(expected):
        page = Image.open(PAGES / name)
        for key in shots or sorted(SHOTS):
            stem = name.rsplit(".", 1)[0]
            out.append(Sample(f"{stem}_photo_{key}.jpg", photograph(page, SHOTS[key]), expected[name]))
    return out
