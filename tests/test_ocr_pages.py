"""/ocr on whole document pages with the local engine: every line in order, pages turned any way, light
text on transparency or on a dark background, the line limit, and images too big to decode in full."""

from __future__ import annotations

import difflib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.infra import images
from plugins.ocr.engines import LocalEngine, local_engine
from plugins.ocr.page import TILE, _spans, is_photo, merge_tiles, sharpness
from tests.harness import Harness
from tests.ocr_samples import photographed_samples

DATA = Path(__file__).resolve().parent.parent / "examples"
PAGES = DATA / "pages"
EXPECTED: dict[str, list[str]] = json.loads((PAGES / "expected.json").read_text(encoding="utf-8"))
LOCAL = {"plugins": {"ocr": {"enabled": True, "engine": "local"}}}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def squeeze(text: str) -> str:
    return "".join(text.split())


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def assert_every_line_in_order(text: str, expected: list[str], max_cer: float = 0.01) -> None:
    """One reply line per page line, in the page's order, each nearly exact (whitespace ignored)."""
    got = [squeeze(line) for line in text.splitlines()]
    want = [squeeze(line) for line in expected]
    assert len(got) == len(want), f"{len(got)} lines read, {len(want)} on the page"
    errors = 0
    for number, (a, b) in enumerate(zip(got, want, strict=True), 1):
        assert difflib.SequenceMatcher(None, a, b).ratio() >= 0.9, f"line {number}: {a!r} for {b!r}"
        errors += sum(
            max(i2 - i1, j2 - j1)
            for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes()
            if op != "equal"
        )
    assert errors <= max_cer * len("".join(want)), f"{errors} character errors"


def light_text_image(mode: str) -> Image.Image:
    """White words on a transparent (RGBA) or black (RGB) background."""
    font = ImageFont.truetype(str(FONT), 40) if FONT.exists() else ImageFont.load_default(40)
    background = (0, 0, 0, 0) if mode == "RGBA" else (20, 20, 30)
    image = Image.new(mode, (640, 160), background)
    draw = ImageDraw.Draw(image)
    draw.text((30, 20), "White text 2026", font=font, fill=(255, 255, 255, 255) if mode == "RGBA" else "white")
    draw.text((30, 90), "on a dark page", font=font, fill=(255, 255, 255, 255) if mode == "RGBA" else "white")
    return image


# ------------------------------------------------------------------------------------- no model needed
def test_transparency_under_light_text_is_flattened_onto_black_and_under_dark_text_onto_white():
    light = images.load(png(light_text_image("RGBA")), images.OCR_LIMITS).image
    assert light.getpixel((5, 5)) == (0, 0, 0)
    dark = Image.new("RGBA", (200, 80), (0, 0, 0, 0))
    ImageDraw.Draw(dark).rectangle((20, 20, 180, 60), fill=(10, 10, 10, 255))
    assert images.load(png(dark), images.OCR_LIMITS).image.getpixel((5, 5)) == (255, 255, 255)
    assert images.flatten_background(Image.new("RGBA", (30, 30), (255, 255, 255, 0))) == (255, 255, 255)


def test_a_huge_image_is_decoded_reduced_to_the_engines_size():
    blank = Image.new("L", (8900, 8900), 255)
    loaded = images.load(png(blank), images.Limits(max_side=2000, max_bytes=1 << 28))
    assert loaded.image.size == (2000, 2000) and loaded.image.mode == "RGB"
    assert loaded.original_size == (8900, 8900)


def test_tiles_cover_the_page_with_overlap_and_cut_lines_are_merged_again():
    starts = _spans(1500, TILE, 128)
    assert starts[0] == 0 and starts[-1] + TILE == 1500
    assert all(b - a <= TILE - 128 for a, b in itertools.pairwise(starts))
    assert _spans(500, TILE, 128) == [0]
    left = np.array([[[10, 100], [640, 100], [640, 130], [10, 130]]], dtype=np.float32)
    right = np.array([[[520, 101], [900, 101], [900, 131], [520, 131]]], dtype=np.float32)
    below = np.array([[[10, 140], [640, 140], [640, 170], [10, 170]]], dtype=np.float32)
    merged = merge_tiles(np.concatenate([left, right, below]), np.array([0, 1, 0]))
    assert len(merged) == 2
    line = min(merged, key=lambda quad: quad[:, 1].min())
    assert line[:, 0].min() == pytest.approx(10, abs=1) and line[:, 0].max() == pytest.approx(900, abs=1)


# ------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    shared = local_engine(0, 2000)
    shared.warm()
    return shared


@pytest.fixture(scope="module")
def turned_pages() -> dict[int, bytes]:
    """The Chinese page turned clockwise by 90, 180 and 270 degrees (made once for the module)."""
    page = Image.open(PAGES / "page_zh.png").convert("RGB")
    return {degrees: png(page.rotate(-degrees, expand=True)) for degrees in (90, 180, 270)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_every_line_of_a_document_page_comes_back_in_reading_order(engine, name):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[(PAGES / name).read_bytes()])
    assert_every_line_in_order(reply.text, EXPECTED[name])
    # PP-OCRv6 reads both pages exactly (PP-OCRv4 made 4 errors in page_zh's 792 characters)
    assert [squeeze(line) for line in reply.text.splitlines()] == [squeeze(line) for line in EXPECTED[name]]


@pytest.mark.slow
@pytest.mark.parametrize("degrees", [90, 180, 270])
async def test_a_page_photographed_sideways_or_upside_down_is_read_the_right_way_up(engine, turned_pages, degrees):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[turned_pages[degrees]])
    assert_every_line_in_order(reply.text, EXPECTED["page_zh.png"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["RGBA", "RGB"], ids=["transparent", "dark-background"])
async def test_white_text_on_transparency_or_a_dark_background_is_read(engine, mode):
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[png(light_text_image(mode))])
    assert [squeeze(line) for line in reply.text.splitlines()] == ["Whitetext2026", "onadarkpage"]


@pytest.mark.slow
async def test_a_page_with_more_lines_than_the_engine_reads_says_how_many_were_left_out(engine, monkeypatch):
    monkeypatch.setattr(engine, "max_lines", 10)
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[(PAGES / "page_en.png").read_bytes()])
        note = bot.app.catalogue.text("en", "ocr.skipped_lines", n=40, limit=10)
    note_line, *lines = reply.text.splitlines()
    assert note_line == note
    assert_every_line_in_order("\n".join(lines), EXPECTED["page_en.png"][:10])


def test_photographed_pages_are_made_the_same_every_run_as_jpeg_at_1280_px():
    first, again = photographed_samples(["page_zh.png"], ["a"]), photographed_samples(["page_zh.png"], ["a"])
    assert first[0].data == again[0].data and first[0].data[:2] == b"\xff\xd8"
    assert max(Image.open(io.BytesIO(first[0].data)).size) == 1280


def test_a_photographed_page_is_told_from_a_scan():
    """Scans and renderings have sharp edges; a phone photo (blur, JPEG at 1280 px) does not."""
    for name in EXPECTED:
        assert not is_photo(Image.open(PAGES / name).convert("RGB")), name
    for sample in photographed_samples():
        assert is_photo(Image.open(io.BytesIO(sample.data)).convert("RGB")), sample.name
    assert sharpness(Image.new("RGB", (50, 50), "white")) == 0.0  # a blank page: nothing sharp, no error


def test_boxes_of_a_tilted_page_cut_by_tiles_are_merged_per_line_not_into_one():
    """On a photo turned by 3°, the upright outlines of neighbouring lines overlap; merging compares them in the
    page's deskewed frame, so each line stays one box (before: the 141 boxes of a photographed page became 1)."""
    slope = np.tan(np.radians(3))
    boxes, tiles = [], []
    for line in range(6):
        top = 100 + 24 * line
        for tile, (left, right) in enumerate([(0, 640), (520, 1100)]):
            boxes.append([[left, top + slope * left], [right, top + slope * right],
                          [right, top + 20 + slope * right], [left, top + 20 + slope * left]])  # fmt: skip
            tiles.append(tile)
    merged = merge_tiles(np.array(boxes, dtype=np.float32), np.array(tiles))
    assert len(merged) == 6


@pytest.mark.slow
@pytest.mark.parametrize("sample", photographed_samples(shots=["b"]), ids=lambda sample: sample.name)
async def test_every_line_of_a_photographed_page_is_read(engine, sample):
    """A page on a table in perspective, turned 4°, lit from one side, blurred, JPEG 70 at 1280 px: every line."""
    async with Harness(LOCAL) as bot:
        (reply,) = await bot.send("/ocr", photos=[sample.data])
    assert_every_line_in_order(reply.text, sample.lines)
