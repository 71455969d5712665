"""Whole pages with the local engine: every line found, the page read the right way up, in bounded memory.

:func:`read_page` replaces RapidOCR's one-call pipeline (detect at one size, classify each line, recognise)
with four steps; which of them PP-OCRv6 still needs was measured against RapidOCR 3.10's defaults (see
``docs/ocr.md``). The models come through :class:`plugins.ocr.models.Models` (either tier).

1. **Detection size from the text height.** A probe runs the detector once on the whole page shrunk to
   :data:`TILE` pixels, measures the median height of what it found, and chooses the detection scale so that
   text is about :data:`DET_TEXT_HEIGHT` pixels tall for the detector (never above the image's own size).
   Recognition always reads the line crops from the full-resolution image, so shrinking for detection
   costs no accuracy as long as the detector still sees the text. A photo of a page (:func:`is_photo`: soft
   edges) is detected at full size instead, and so is a page whose probe saw blocks rather than lines.
2. **Tiles with overlap.** The detector then runs on tiles of at most :data:`TILE` × :data:`TILE` pixels
   that overlap by :data:`OVERLAP`. Its memory grows with its input (PP-OCRv6 small, measured: +95 MB at
   640², +240 MB at 960², +350 MB at 1280²), so tiles bound the peak whatever the page size. Pieces of one
   line cut by a tile edge are merged again, compared in the page's deskewed frame (:func:`merge_tiles`).
3. **Orientation of the whole page.** RapidOCR's per-line direction classifier is *off* (with PP-OCRv4 it
   called 22 of the 50 upright lines of ``page_en.png`` "upside down"). Instead: when most boxes are tall and
   thin the page is sideways and is turned by 90°; after recognition, when the widest lines did not read
   confidently, they are recognised turned by 180° too, and the page is turned (and recognised again) when
   that reads clearly better (:func:`upside_down`).
4. **Recognition** of every line (up to ``max_lines``; more are counted in ``skipped_lines`` so the answer
   can say so), with per-character boxes where the tier gives them, for
   :func:`~plugins.ocr.layout.restore_spaces`. Lines longer than :data:`MAX_RATIO` times their height are
   cut at word gaps first: the recognition model's time grows faster than a line's length, and the layout
   joins the pieces again.

Everything here is synchronous and CPU-bound (the plugin calls it through ``ctx.run_cpu``) and must run
under the engine's lock: the models' objects are not thread-safe.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from plugins.ocr.layout import Fragment, restore_spaces
from plugins.ocr.models import Models

log = logging.getLogger(__name__)

#: Largest detector input (pixels per side) for one call: the probe and every tile.
TILE = 640
#: Tiles overlap by this many detector pixels: a line up to this tall is whole in at least one tile.
OVERLAP = 128
#: Box height (pixels, the detector's boxes are a little taller than the text) the detector should see.
#: Measured with PP-OCRv4 on ``examples/pages`` (CER en / zh): 16 → 0.25 % / 0 %, 24 → 0 % / 0.4 %, full size
#: → 0 % / 0.1 % at twice the detection time. With PP-OCRv6 small both pages read exactly at 24 and at full
#: size; 24 saves ~10 % of the CPU on the 60-line page (12.6 s against 14.1 s, one ONNX Runtime thread).
DET_TEXT_HEIGHT = 24
#: Pages whose :func:`sharpness` is below this are photos (measured: scans 0.82-1.00, photos 0.14-0.58).
PHOTO_SHARPNESS = 0.7
#: A probe whose median box is taller than this fraction of the page's short side saw blocks, not lines (a
#: blurred photo shrunk to the probe's size: its lines run together); the page is then detected at full size.
MAX_LINE_FRACTION = 0.2
#: Line crops wider than this many times their height are recognised in pieces cut at word gaps. Measured on a
#: 1900×1950 page of 60 lines of 20 px serif (1200 px lines), PP-OCRv4: 25.6 s whole, 6.4 s at 16 (12: no
#: faster); PP-OCRv6 small: 13.8 s CPU whole, 12.6 s at 16 (one thread); ``page_en`` and ``page_zh`` unchanged.
MAX_RATIO = 16
#: Lines sampled (the widest) to decide whether the page is upside down.
ORIENTATION_SAMPLE = 6
#: Sampled lines read at least this confidently as they are (mean score): the page is upright, no more check.
#: Measured: upright pages and photos 0.96-0.99; the same turned by 180° 0.00-0.39 (0.94-1.00 once turned back).
CONFIDENT = 0.85
#: The page is turned by 180° when the turned sample reads this much more confidently (mean score, 0..1).
FLIP_MARGIN = 0.1
#: Recognised lines below this confidence are dropped (RapidOCR's default ``text_score``).
TEXT_SCORE = 0.5
#: The largest skew (radians, 30°) :func:`skew` reports: beyond it the boxes are not lines of one page.
MAX_SKEW = math.radians(30)
#: Lines lower than this (pixels) on an image shrunk to ``max_side``: the text was probably shrunk too much.
SMALL_TEXT = 9


@dataclass
class PageReading:
    """What :func:`read_page` found: fragments in the coordinates of ``image`` (the page turned upright).

    ``rotation``: degrees the page was turned clockwise to be upright (0, 90, 180, 270);
    ``skipped_lines``: lines found but not recognised because of ``max_lines``.
    """

    fragments: list[Fragment]
    image: Image.Image
    rotation: int = 0
    skipped_lines: int = 0


def _order(quad: np.ndarray) -> np.ndarray:
    """Four points clockwise from the top-left (for boxes tilted less than 45°)."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def bgr(image: Image.Image) -> np.ndarray:
    """An RGB image as the BGR array the models were trained on."""
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def _detect(models: Models, array: np.ndarray) -> np.ndarray:
    """Boxes (N×4×2, ``array`` coordinates) from one detector call on a BGR image of at most ~TILE² pixels."""
    return models.detect(np.ascontiguousarray(array))


def crop_lines(array: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Each box of the BGR ``array`` cut out and straightened (a box twice as tall as wide is turned upright)."""
    import cv2

    crops = []
    for quad in boxes:
        quad = np.asarray(quad, dtype=np.float32)
        width = max(1, int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))))
        height = max(1, int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(quad, target)
        crop = cv2.warpPerspective(
            array, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
        )
        if crop.shape[0] >= 1.5 * crop.shape[1]:
            crop = np.rot90(crop)
        crops.append(np.ascontiguousarray(crop))
    return crops


def _spans(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` in common."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def _heights(boxes: np.ndarray) -> np.ndarray:
    """The short side of each box (the text height, whatever the text direction)."""
    sides_a = np.linalg.norm(boxes[:, 0] - boxes[:, 1], axis=1)
    sides_b = np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1)
    return np.minimum(sides_a, sides_b)


def detect_boxes(models: Models, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, tile index of each box)`` for ``image``, in its pixel coordinates.

    The probe (the page shrunk to :data:`TILE`) chooses the detection scale; tiles then cover the page at
    that scale. A page that fits one tile at its own size is detected once.
    """
    width, height = image.size
    fit = min(1.0, TILE / max(width, height))
    probe_image = image if fit >= 1.0 else image.resize((round(width * fit), round(height * fit)), Image.BILINEAR)
    probe = _detect(models, bgr(probe_image))
    if fit >= 1.0:
        return probe, np.zeros(len(probe), dtype=np.int32)
    del probe_image
    probe_height = float(np.median(_heights(probe))) / fit if len(probe) else 0.0  # in image pixels
    if len(probe) and probe_height <= MAX_LINE_FRACTION * min(width, height):
        scale = min(1.0, max(fit, DET_TEXT_HEIGHT / probe_height))
        if scale < 1.0 and is_photo(image):
            scale = 1.0  # blurred, compressed text: shrunk, the detector's boxes take in the next lines
    else:
        # Nothing seen shrunk (small text, or a blank page), or no lines but blocks (the lines of a blurred
        # photo run together at the probe's scale): look at full size.
        scale = 1.0
    work = image if scale >= 1.0 else image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
    array = bgr(work)
    del work
    found: list[np.ndarray] = []
    tiles: list[np.ndarray] = []
    number = 0
    for top in _spans(array.shape[0], TILE, OVERLAP):
        for left in _spans(array.shape[1], TILE, OVERLAP):
            boxes = _detect(models, array[top : top + TILE, left : left + TILE])
            if len(boxes):
                boxes[:, :, 0] += left
                boxes[:, :, 1] += top
                found.append(boxes / scale)
                tiles.append(np.full(len(boxes), number, dtype=np.int32))
            number += 1
    del array
    if not found:
        return np.zeros((0, 4, 2), dtype=np.float32), np.zeros(0, dtype=np.int32)
    boxes, tile_of = np.concatenate(found), np.concatenate(tiles)
    log.debug("page %dx%d: detection at scale %.2f in %d tile(s), %d boxes", width, height, scale, number, len(boxes))
    return boxes, tile_of


def skew(boxes: np.ndarray) -> float:
    """The page's text direction in radians: the length-weighted median angle of the boxes' top edges,
    within ±:data:`MAX_SKEW` (0 for no boxes)."""
    if len(boxes) == 0:
        return 0.0
    edge = boxes[:, 1] - boxes[:, 0]
    angles = np.arctan2(edge[:, 1], edge[:, 0])
    weights = np.linalg.norm(edge, axis=1)
    order = np.argsort(angles)
    cumulative = np.cumsum(weights[order])
    if cumulative[-1] <= 0:
        return 0.0
    angle = float(angles[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    return max(-MAX_SKEW, min(MAX_SKEW, angle))


def sharpness(image: Image.Image) -> float:
    """How sharp the edges of ``image`` are: the 99.5th percentile of the jumps between horizontally adjacent
    pixels (grey) over the image's contrast (98th - 2nd percentile), in 0..1 (every other row is sampled).

    Measured: rendered and scanned pages, screenshots and the text images 0.82-1.00; photographed pages (blur,
    JPEG at 1280 px) 0.14-0.56; ``tilted.jpg`` (a noisy, turned photo of a line) 0.58.
    """
    grey = np.asarray(image.convert("L"), dtype=np.float32)[::2]
    low, high = np.percentile(grey, [2, 98])
    jumps = np.abs(np.diff(grey, axis=1))
    del grey
    return float(np.percentile(jumps, 99.5) / max(float(high - low), 1.0))


def is_photo(image: Image.Image) -> bool:
    """Whether ``image`` is a photo of a page rather than a scan or a rendering (:func:`sharpness` below
    :data:`PHOTO_SHARPNESS`): its text is then detected at full size, not shrunk to the detector's height."""
    value = sharpness(image)
    log.debug("page sharpness %.2f: %s", value, "photo" if value < PHOTO_SHARPNESS else "scan")
    return value < PHOTO_SHARPNESS


def merge_tiles(boxes: np.ndarray, tile_of: np.ndarray) -> np.ndarray:
    """Boxes of one line found in two tiles (pieces cut by a tile edge, or a line seen whole and in part) merged.

    Two boxes from *different* tiles are one line when, in the page's deskewed frame (:func:`skew`), their
    outlines overlap and their vertical extents share at least half the smaller height (lines run roughly
    horizontally here: the page is turned first).
    Boxes from one tile are never merged: the detector separated them on purpose.
    """
    if len(boxes) < 2 or len(set(tile_of.tolist())) < 2:
        return boxes
    # Compare in the page's own frame: on a photo turned by a few degrees the upright outlines of neighbouring
    # lines overlap (a 900 px line turned by 3° climbs 47 px), so they are compared with the skew undone.
    angle = skew(boxes)
    cos, sin = math.cos(angle), math.sin(angle)
    xs = boxes[:, :, 0] * cos + boxes[:, :, 1] * sin
    ys = -boxes[:, :, 0] * sin + boxes[:, :, 1] * cos
    x0, x1 = xs.min(axis=1), xs.max(axis=1)
    y0, y1 = ys.min(axis=1), ys.max(axis=1)
    dx = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
    dy = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    h = y1 - y0
    same = (dx > 0) & (dy >= 0.5 * np.minimum(h[:, None], h[None, :])) & (tile_of[:, None] != tile_of[None, :])
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(same, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    import cv2

    merged = []
    for members in groups.values():
        if len(members) == 1:
            merged.append(boxes[members[0]])
            continue
        points = boxes[members].reshape(-1, 2)
        merged.append(_order(cv2.boxPoints(cv2.minAreaRect(points)).astype(np.float32)))
    return np.array(merged, dtype=np.float32)


def _turn(boxes: np.ndarray, size: tuple[int, int], degrees: int) -> np.ndarray:
    """``boxes`` in an image of ``size`` turned clockwise by ``degrees`` (90, 180 or 270)."""
    width, height = size
    x, y = boxes[:, :, 0].copy(), boxes[:, :, 1].copy()
    out = np.empty_like(boxes)
    if degrees == 90:
        out[:, :, 0], out[:, :, 1] = height - y, x
    elif degrees == 180:
        out[:, :, 0], out[:, :, 1] = width - x, height - y
    else:  # 270
        out[:, :, 0], out[:, :, 1] = y, width - x
    return np.array([_order(quad) for quad in out], dtype=np.float32)


#: How to turn an image clockwise by 90, 180 or 270 degrees (``Image.transpose``).
TURN = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


def is_sideways(boxes: np.ndarray) -> bool:
    """Whether most text boxes stand upright (tall and thin): the page lies on its side."""
    if len(boxes) == 0:
        return False
    sides_x = np.linalg.norm(boxes[:, 0] - boxes[:, 1], axis=1)
    sides_y = np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1)
    tall = int(np.sum(sides_y > 2 * sides_x))
    wide = int(np.sum(sides_x > 2 * sides_y))
    return tall >= 2 and tall > wide


def upside_down(models: Models, crops: list[np.ndarray], scores: list[float]) -> bool:
    """Whether the page is upside down, from the recognition ``scores`` of its line ``crops``.

    The widest lines (:data:`ORIENTATION_SAMPLE`) decide. Read confidently as they are (mean score at least
    :data:`CONFIDENT`, the usual case), the page is upright and nothing more is recognised; otherwise they
    are recognised turned by 180°, and the page is upside down when that reads clearly more confidently
    (:data:`FLIP_MARGIN`).
    """
    if not crops:
        return False
    ratios = [c.shape[1] / max(1, c.shape[0]) for c in crops]
    sample = sorted(range(len(crops)), key=lambda i: ratios[i], reverse=True)[:ORIENTATION_SAMPLE]
    score_as_is = float(np.mean([scores[i] for i in sample]))
    if score_as_is >= CONFIDENT:
        return False
    turned = models.recognise([np.ascontiguousarray(np.rot90(crops[i], 2)) for i in sample])
    score_turned = float(np.mean([r.score for r in turned]))
    log.debug("orientation: mean score %.2f as is, %.2f turned by 180°", score_as_is, score_turned)
    return score_turned > score_as_is + FLIP_MARGIN


def _cut_points(crop: np.ndarray, max_ratio: float) -> list[int]:
    """Where to cut a line crop wider than ``max_ratio`` × its height: the emptiest columns (word gaps) near
    evenly spaced targets. Returns the inner cut columns (none for a crop that is short enough)."""
    height, width = crop.shape[:2]
    pieces = math.ceil(width / (max_ratio * height))
    if pieces < 2:
        return []
    gray = crop.mean(axis=2)
    ink = (np.abs(gray - np.median(gray)) > 40).sum(axis=0).astype(np.float32)
    run = max(1, height // 3)  # a gap is a few empty columns: smooth over a third of the height
    ink = np.convolve(ink, np.ones(run, dtype=np.float32), mode="same")
    step = width / pieces
    cuts = []
    for number in range(1, pieces):
        lo, hi = round(number * step - step / 3), round(number * step + step / 3)
        window = ink[lo:hi]
        best = np.flatnonzero(window == window.min())
        cuts.append(lo + int(best[len(best) // 2]))  # the middle of the emptiest stretch
    return cuts


def split_long_lines(crops: list[np.ndarray], boxes: np.ndarray, max_ratio: float) -> tuple[list, np.ndarray]:
    """Crops wider than ``max_ratio`` × their height cut at word gaps, each piece with its part of the box.

    Recognition time grows faster than the line's length (measured: a 60-line page of 1200 px lines took
    22 s whole), and a piece of a line is just another fragment for the layout, which joins it back.
    """
    out_crops: list[np.ndarray] = []
    out_boxes: list[np.ndarray] = []
    for crop, quad in zip(crops, boxes, strict=True):
        cuts = [] if np.linalg.norm(quad[1] - quad[0]) < np.linalg.norm(quad[3] - quad[0]) else None
        cuts = cuts if cuts is not None else _cut_points(crop, max_ratio)
        width = crop.shape[1]
        edges = [0, *cuts, width]
        for left, right in itertools.pairwise(edges):
            a, b = left / width, right / width
            top0, top1 = quad[0] + (quad[1] - quad[0]) * a, quad[0] + (quad[1] - quad[0]) * b
            bottom0, bottom1 = quad[3] + (quad[2] - quad[3]) * a, quad[3] + (quad[2] - quad[3]) * b
            out_crops.append(np.ascontiguousarray(crop[:, left:right]))
            out_boxes.append(np.array([top0, top1, bottom1, bottom0], dtype=np.float32))
    return out_crops, np.array(out_boxes, dtype=np.float32).reshape(-1, 4, 2)


def _recognise(models: Models, image: Image.Image, boxes: np.ndarray, max_lines: int) -> tuple[Any, ...]:
    """``(crops, their boxes, what was read, lines skipped)`` for the line ``boxes`` of ``image``."""
    # Reading order for the cap (top to bottom), so that what is skipped is the end of the page.
    boxes = boxes[np.argsort(boxes[:, :, 1].min(axis=1), kind="stable")]
    skipped = max(0, len(boxes) - max_lines)
    boxes = boxes[:max_lines]
    crops, boxes = split_long_lines(crop_lines(bgr(image), boxes), boxes, MAX_RATIO)
    results = models.recognise(crops, boxes)
    return crops, boxes, results, skipped


def read_page(models: Models, image: Image.Image, max_lines: int = 1000) -> PageReading:
    """Every line of ``image`` (RGB): fragments with the recognised text, spaces restored where the tier gives
    character positions.

    Returns the fragments in the coordinates of the page turned upright (``PageReading.image``), the
    rotation applied, and how many lines were not recognised because of ``max_lines``.
    """
    boxes, tile_of = detect_boxes(models, image)
    rotation = 0
    if is_sideways(boxes):  # detect again on the turned page: tiles cut vertical lines along their length
        rotation = 90
        image = image.transpose(TURN[90])
        boxes, tile_of = detect_boxes(models, image)
    boxes = merge_tiles(boxes, tile_of)
    if len(boxes) == 0:
        return PageReading([], image, rotation)
    crops, pieces, results, skipped = _recognise(models, image, boxes, max_lines)
    if upside_down(models, crops, [r.score for r in results]):
        rotation = (rotation + 180) % 360
        boxes = _turn(boxes, image.size, 180)
        image = image.transpose(TURN[180])
        crops, pieces, results, skipped = _recognise(models, image, boxes, max_lines)
    del crops
    fragments = []
    for quad, read in zip(pieces, results, strict=True):
        if read.score < TEXT_SCORE or not read.text.strip():
            continue
        text = restore_spaces(read.text, quad.tolist(), read.boxes, read.pieces) if read.pieces else read.text
        points = tuple((float(x), float(y)) for x, y in quad)
        fragments.append(Fragment(text.strip(), points, read.score))  # type: ignore[arg-type]
    log.debug("page: %d pieces, %d read, rotation %d°, %d skipped", len(pieces), len(fragments), rotation, skipped)
    return PageReading(fragments, image, rotation, skipped)
