"""Reading order (plugins.ocr.layout) on synthetic boxes: no model needed."""

from __future__ import annotations

import math
import random

import pytest

from plugins.ocr.layout import Fragment, build_lines, estimate_skew, lines_text


def rect(text: str, left: float, top: float, width: float, height: float = 30) -> Fragment:
    return Fragment.from_rect(text, left, top, width, height)


def tilted(text: str, left: float, baseline_y: float, width: float, degrees: float, height: float = 30) -> Fragment:
    """A fragment whose top-left corner is at (left, baseline_y), rotated by ``degrees`` (clockwise on screen)."""
    a = math.radians(degrees)
    ux, uy = math.cos(a), math.sin(a)
    nx, ny = -math.sin(a), math.cos(a)
    p0 = (left, baseline_y)
    p1 = (left + width * ux, baseline_y + width * uy)
    p2 = (p1[0] + height * nx, p1[1] + height * ny)
    p3 = (left + height * nx, baseline_y + height * ny)
    return Fragment(text, (p0, p1, p2, p3))


def test_fragments_on_one_line_are_joined_left_to_right_with_spaces():
    fragments = [rect("world", 200, 12, 90), rect("Hello", 10, 10, 100), rect("again", 400, 8, 90)]
    assert lines_text(build_lines(fragments)) == "Hello world again"


def test_lines_are_ordered_top_to_bottom_whatever_the_input_order():
    fragments = [rect("third", 10, 200, 80), rect("first", 10, 10, 80), rect("second", 10, 100, 80)]
    assert [line.text for line in build_lines(fragments)] == ["first", "second", "third"]


def test_a_receipt_with_columns_keeps_each_row_together():
    fragments = [
        rect("Total", 30, 170, 90),
        rect("68.50", 230, 171, 90),
        rect("Latte", 30, 80, 90),
        rect("2 x", 150, 82, 40),
        rect("28.00", 230, 79, 90),
    ]
    assert lines_text(build_lines(fragments)) == "Latte 2 x 28.00\nTotal 68.50"


def test_slightly_uneven_tops_still_count_as_one_line():
    # A taller fragment that starts a little higher (a capital, a bigger font) is the same line.
    fragments = [rect("Big", 10, 0, 60, 44), rect("small", 80, 12, 80, 28)]
    assert lines_text(build_lines(fragments)) == "Big small"


@pytest.mark.parametrize("degrees", [-8, -4, 4, 8])
def test_tilted_lines_split_into_fragments_stay_whole_and_in_order(degrees):
    # Two lines 45 px apart, each made of three fragments along a tilted baseline. Over 600 px the
    # baseline climbs or falls up to 84 px: more than the line spacing, so sorting by y alone interleaves.
    a = math.radians(degrees)
    fragments = []
    for row, words in enumerate([["one", "two", "three"], ["four", "five", "six"]]):
        for col, word in enumerate(words):
            along = col * 210
            left = 50 + along * math.cos(a) - row * 45 * math.sin(a)
            top = 200 + along * math.sin(a) + row * 45 * math.cos(a)
            fragments.append(tilted(word, left, top, 180, degrees))
    random.Random(degrees).shuffle(fragments)
    assert lines_text(build_lines(fragments)) == "one two three\nfour five six"
    assert math.degrees(estimate_skew(fragments)) == pytest.approx(degrees, abs=0.01)


def test_chinese_fragments_that_touch_are_joined_without_a_space():
    fragments = [rect("青島", 10, 10, 60), rect("啤酒", 72, 10, 60), rect("TSINGTAO", 150, 10, 160)]
    assert lines_text(build_lines(fragments)) == "青島啤酒 TSINGTAO"


def test_chinese_fragments_far_apart_keep_a_space():
    fragments = [rect("名称", 10, 10, 60), rect("价格", 300, 10, 60)]
    assert lines_text(build_lines(fragments)) == "名称 价格"


def test_fragments_without_positions_keep_the_engine_order():
    fragments = [Fragment("first line"), Fragment("second line"), Fragment("  ")]
    lines = build_lines(fragments)
    assert [line.text for line in lines] == ["first line", "second line"]
    assert all(line.quad is None for line in lines)


def test_nothing_in_nothing_out():
    assert build_lines([]) == []
    assert build_lines([rect("   ", 0, 0, 10)]) == []


def test_line_outline_encloses_its_fragments():
    fragments = [rect("a", 10, 10, 50), rect("b", 100, 14, 50)]
    (line,) = build_lines(fragments)
    xs = [x for x, _ in line.quad]
    ys = [y for _, y in line.quad]
    assert min(xs) == pytest.approx(10) and max(xs) == pytest.approx(150)
    assert min(ys) == pytest.approx(10) and max(ys) == pytest.approx(44)


def test_skew_estimate_ignores_a_few_short_noisy_fragments():
    fragments = [tilted("long line of text", 10, 100, 400, 3), tilted("x", 10, 300, 10, -25)]
    assert math.degrees(estimate_skew(fragments)) == pytest.approx(3, abs=0.01)
