"""Reading order: rebuild text lines from the fragments an OCR engine returns.

Engines return *fragments*: a piece of text and where it is (a quadrilateral, or an axis-aligned
rectangle for Baidu's positional endpoints). :func:`build_lines` groups them into visual lines and
orders them the way the image reads: fragments of one line left to right, lines top to bottom. Both
the local engine and Baidu go through this one function.

Slightly tilted photos: the dominant text direction is estimated from the fragments' own edges
(a width-weighted median angle, at most :data:`MAX_SKEW_DEGREES`), and grouping happens in that rotated
frame, so a line that climbs across the image still counts as one line and lines do not interleave.

Grouping rule: in the deskewed frame, a fragment belongs to a line when their vertical extents overlap
by at least :data:`SAME_LINE_OVERLAP` of the smaller height. Joining rule: fragments of a line are joined
with one space, except between two CJK characters that (almost) touch, where no space is written
(Chinese and Japanese are written without spaces). Fragments without a position (Baidu's ``*_basic``
endpoints, which answer in reading order already) are kept in the order given, one line each.

Limitation: one visual line is one line of text; side-by-side columns are read row by row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float]

#: Vertical overlap (fraction of the smaller height) for two fragments to share a line.
SAME_LINE_OVERLAP = 0.5
#: Fragments tilted more than this are not "slightly tilted": the skew estimate is clamped.
MAX_SKEW_DEGREES = 30.0
#: Between CJK characters, a gap wider than this fraction of the line height still gets a space.
CJK_GAP = 0.5


@dataclass(frozen=True)
class Fragment:
    """A piece of recognised text and its outline in image pixels.

    ``quad``: four corners, clockwise from top-left (``None`` when the engine gives no position).
    ``score``: the engine's confidence in 0..1 when it reports one.
    """

    text: str
    quad: tuple[Point, Point, Point, Point] | None = None
    score: float | None = None

    @classmethod
    def from_rect(
        cls, text: str, left: float, top: float, width: float, height: float, score: float | None = None
    ) -> Fragment:
        """A fragment from an axis-aligned box (Baidu's ``location``: left, top, width, height)."""
        right, bottom = left + width, top + height
        return cls(text, ((left, top), (right, top), (right, bottom), (left, bottom)), score)


@dataclass
class Line:
    """One visual line: its text, its fragments left to right, and its outline (``None`` without positions)."""

    text: str
    fragments: list[Fragment] = field(default_factory=list)
    quad: tuple[Point, Point, Point, Point] | None = None


@dataclass
class _Placed:
    """A fragment projected into the deskewed frame."""

    fragment: Fragment
    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def _edge_angle(a: Point, b: Point) -> float:
    return math.atan2(b[1] - a[1], b[0] - a[0])


def estimate_skew(fragments: Iterable[Fragment]) -> float:
    """The dominant text direction in radians (0 = horizontal, positive = clockwise on screen).

    Width-weighted median of the angles of the fragments' top and bottom edges, clamped to
    ±:data:`MAX_SKEW_DEGREES`.
    """
    samples: list[tuple[float, float]] = []
    for fragment in fragments:
        if fragment.quad is None:
            continue
        p0, p1, p2, p3 = fragment.quad
        width = math.dist(p0, p1)
        if width <= 0:
            continue
        top, bottom = _edge_angle(p0, p1), _edge_angle(p3, p2)
        samples.append(((top + bottom) / 2, width))
    if not samples:
        return 0.0
    samples.sort()
    half = sum(w for _, w in samples) / 2
    running = 0.0
    angle = samples[-1][0]
    for value, weight in samples:
        running += weight
        if running >= half:
            angle = value
            break
    limit = math.radians(MAX_SKEW_DEGREES)
    return max(-limit, min(limit, angle))


def _place(fragment: Fragment, cos: float, sin: float) -> _Placed:
    assert fragment.quad is not None
    xs = [x * cos + y * sin for x, y in fragment.quad]
    ys = [-x * sin + y * cos for x, y in fragment.quad]
    return _Placed(fragment, min(xs), max(xs), min(ys), max(ys))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def is_cjk(char: str) -> bool:
    """Whether ``char`` belongs to a script written without spaces (Chinese, Japanese, Korean, full-width)."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def _join(placed: Sequence[_Placed]) -> str:
    """The text of one line, fragments already left to right."""
    height = max(p.height for p in placed) or 1.0
    out = ""
    previous: _Placed | None = None
    for item in placed:
        text = item.fragment.text.strip()
        if not text:
            continue
        if previous is not None and out:
            gap = item.x0 - previous.x1
            tight_cjk = is_cjk(out[-1]) and is_cjk(text[0]) and gap <= CJK_GAP * height
            out += text if tight_cjk else " " + text
        else:
            out += text
        previous = item
    return out


def _outline(placed: Sequence[_Placed], cos: float, sin: float) -> tuple[Point, Point, Point, Point]:
    """The line's rectangle in the deskewed frame, rotated back into image coordinates."""
    x0, x1 = min(p.x0 for p in placed), max(p.x1 for p in placed)
    y0, y1 = min(p.y0 for p in placed), max(p.y1 for p in placed)

    def back(x: float, y: float) -> Point:
        return (x * cos - y * sin, x * sin + y * cos)

    return (back(x0, y0), back(x1, y0), back(x1, y1), back(x0, y1))


def build_lines(fragments: Sequence[Fragment]) -> list[Line]:
    """Group ``fragments`` into lines in reading order (see the module docstring for the rules).

    Empty fragments are dropped. When any fragment has no position, the engine's order is kept and each
    fragment is a line of its own (positions cannot be compared then).
    """
    fragments = [f for f in fragments if f.text.strip()]
    if not fragments:
        return []
    if any(f.quad is None for f in fragments):
        return [Line(f.text.strip(), [f], f.quad) for f in fragments]

    angle = estimate_skew(fragments)
    cos, sin = math.cos(angle), math.sin(angle)
    placed = sorted((_place(f, cos, sin) for f in fragments), key=lambda p: ((p.y0 + p.y1) / 2, p.x0))

    groups: list[list[_Placed]] = []
    spans: list[tuple[float, float]] = []  # each group's vertical extent: the median fragment's
    for item in placed:
        best, best_overlap = -1, 0.0
        for index, (g0, g1) in enumerate(spans):
            shared = _overlap(item.y0, item.y1, g0, g1)
            needed = SAME_LINE_OVERLAP * min(item.height, g1 - g0)
            if shared >= needed and shared > best_overlap:
                best, best_overlap = index, shared
        if best < 0:
            groups.append([item])
            spans.append((item.y0, item.y1))
        else:
            group = groups[best]
            group.append(item)
            tops = sorted(p.y0 for p in group)
            bottoms = sorted(p.y1 for p in group)
            spans[best] = (tops[len(tops) // 2], bottoms[len(bottoms) // 2])

    lines: list[tuple[float, Line]] = []
    for group in groups:
        group.sort(key=lambda p: p.x0)
        centre = sum((p.y0 + p.y1) / 2 for p in group) / len(group)
        line = Line(_join(group), [p.fragment for p in group], _outline(group, cos, sin))
        if line.text:
            lines.append((centre, line))
    lines.sort(key=lambda item: item[0])
    return [line for _, line in lines]


def lines_text(lines: Iterable[Line]) -> str:
    """The text of ``lines``, one per line."""
    return "\n".join(line.text for line in lines)


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
    are ever added (a space the model wrote stays, PP-OCRv6 writes most of them itself): when the pieces do not
    spell ``text`` (minus spaces), ``text`` is returned unchanged.
    """
    spaced: set[int] = set()  # positions (in ``text`` without whitespace) the model wrote a space before
    count = 0
    for index, char in enumerate(text):
        if char.isspace():
            continue
        if index and text[index - 1].isspace():
            spaced.add(count)
        count += 1
    try:
        (x0, y0), (x1, y1), _, (x3, y3) = quad
        length = math.hypot(x1 - x0, y1 - y0)
        height = math.hypot(x3 - x0, y3 - y0)
        if length <= 0 or height <= 0 or len(boxes) != len(pieces):
            return text
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        out, previous_end, written = "", None, 0
        for box, piece in zip(boxes, pieces, strict=True):
            piece = str(piece)
            along = [x * ux + y * uy for x, y in box]
            start, end = min(along), max(along)
            if not piece.strip():
                out += " " if out and not out.endswith(" ") else ""
                previous_end = None
                continue
            gap = start - previous_end if previous_end is not None else 0.0
            first = True
            for char in piece:
                if char.isspace():
                    continue
                wide = first and bool(out) and gap > _space_gap(out[-1], char) * height
                if out and not out.endswith(" ") and (written in spaced or wide):
                    out += " "
                out += char
                written += 1
                first = False
            previous_end = end
    except (TypeError, ValueError):
        return text
    if "".join(out.split()) != "".join(text.split()):
        return text
    return out.strip()
