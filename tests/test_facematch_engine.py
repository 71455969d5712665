"""The local face engine (dlib), the score mapping and the reply picture, without the bot around them."""

from __future__ import annotations

import io
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugins.facematch import engines
from plugins.facematch.engines import (
    DEFAULT_THRESHOLD,
    DLIB_SAME_DISTANCE,
    FaceScan,
    LocalFaceEngine,
    distance_to_score,
    score_to_distance,
)
from plugins.facematch.picture import face_tile, render_pair

DATA = Path(__file__).resolve().parents[1] / "examples"
FACES = DATA / "faces"
PEOPLE = {"obama_1": "obama", "obama_2": "obama", "biden_1": "biden", "biden_2": "biden"}
PAIRS = list(itertools.combinations(sorted(PEOPLE), 2))


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="session")
def engine() -> LocalFaceEngine:
    """The local engine with its models loaded (once per test session: the models are per process)."""
    local = LocalFaceEngine()
    local.load()
    return local


@pytest.fixture(scope="session")
def scans(engine: LocalFaceEngine) -> dict[str, FaceScan]:
    return {name: engine.scan(load(FACES / f"{name}.jpg")) for name in [*PEOPLE, "two_people"]}


# ------------------------------------------------------------------------------------------ score mapping
def test_mapping_is_anchored_at_dlibs_threshold():
    assert distance_to_score(DLIB_SAME_DISTANCE) == pytest.approx(DEFAULT_THRESHOLD)
    assert distance_to_score(0.0) == 100.0
    assert distance_to_score(1.0) == 0.0
    assert distance_to_score(1.7) == 0.0


def test_mapping_decreases_and_inverts():
    distances = np.linspace(0, 1, 101)
    scores = [distance_to_score(d) for d in distances]
    assert all(a > b for a, b in itertools.pairwise(scores))
    for d in distances:
        assert score_to_distance(distance_to_score(d)) == pytest.approx(d, abs=1e-9)
    assert score_to_distance(90) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ detection
def test_every_portrait_has_one_face(scans):
    for name in PEOPLE:
        assert scans[name].count == 1, name
        assert scans[name].descriptor is not None and scans[name].descriptor.shape == (128,)


def test_two_people_has_two_faces_largest_first(scans):
    scan = scans["two_people"]
    assert scan.count == 2
    areas = [(r - left) * (b - t) for left, t, r, b in scan.boxes]
    assert areas[0] >= areas[1]


def test_no_face_png_has_none(engine):
    scan = engine.scan(load(DATA / "bad" / "no_face.png"))
    assert scan.count == 0 and scan.descriptor is None
    assert engine.scan(load(DATA / "bad" / "blank.png")).count == 0


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_pair_verdicts(scans, first, second):
    result = LocalFaceEngine.compare(scans[first], scans[second])
    same = PEOPLE[first] == PEOPLE[second]
    assert result.same is same, (first, second, result)
    assert result.engine == "local"
    # a clear margin on either side of the threshold (measured: same ≥ 86, different ≤ 41)
    assert (result.score >= DEFAULT_THRESHOLD + 5) if same else (result.score <= DEFAULT_THRESHOLD - 20)


def test_small_face_is_found_by_a_later_pass_and_still_matches(engine, scans):
    """A 60 px face in a 1920×1080 frame: missed on the 640 px copy, found with more resolution."""
    portrait = load(FACES / "obama_1.jpg")
    left, _, right, _ = scans["obama_1"].boxes[0]
    scale = 60 / (right - left)
    small = portrait.resize((round(portrait.width * scale), round(portrait.height * scale)), Image.LANCZOS)
    frame = Image.new("RGB", (1920, 1080), (128, 128, 128))
    frame.paste(small, (1500, 700))
    assert LocalFaceEngine(tiers=engines.DETECTION_TIERS[:2]).detect(frame) == []
    scan = engine.scan(frame)
    assert scan.count == 1
    fl, ft, fr, fb = scan.boxes[0]
    assert 1500 <= fl < fr <= 1500 + small.width and 700 <= ft < fb <= 700 + small.height
    assert LocalFaceEngine.compare(scan, scans["obama_2"]).same


def test_concurrent_scans_match_sequential_ones(engine, scans):
    """Several worker threads at once (the lock serialises dlib): same boxes and descriptors."""
    names = [*PEOPLE, "two_people"] * 2
    images = {name: load(FACES / f"{name}.jpg") for name in set(names)}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: (n, engine.scan(images[n])), names))
    for name, scan in results:
        assert scan.boxes == scans[name].boxes
        assert np.allclose(scan.descriptor, scans[name].descriptor)


def test_grayscale_image_is_accepted(engine, scans):
    gray = load(FACES / "biden_2.jpg").convert("L")
    scan = engine.scan(gray)
    assert scan.count == 1
    assert LocalFaceEngine.compare(scan, scans["biden_1"]).same


# ------------------------------------------------------------------------------------------ picture
def test_picture_is_a_jpeg_with_both_faces(scans):
    a, b = load(FACES / "obama_1.jpg"), load(FACES / "biden_1.jpg")
    data = render_pair(a, scans["obama_1"].largest, b, scans["biden_1"].largest, 39.8, 80)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        assert im.width >= 600 and im.height > 320
        # the score area is drawn in red (different people), the left tile is the face, not the background
        pixels = np.asarray(im.convert("RGB")).astype(int)
    text_band = pixels[352:410]
    reddish = (text_band[..., 0] > 150) & (text_band[..., 1] < 90) & (text_band[..., 2] < 90)
    assert reddish.sum() > 500  # the large score figures are legible, not a few pixels


def test_face_tile_crops_around_the_box_and_pads_outside():
    image = Image.new("RGB", (400, 300), (255, 0, 0))
    tile = face_tile(image, (-50, -50, 50, 50), size=100)  # a face cut off at the top-left corner
    assert tile.size == (100, 100)
    assert tile.getpixel((2, 2)) != (255, 0, 0)  # outside the image: padding
    assert tile.getpixel((90, 90)) == (255, 0, 0)
    whole = face_tile(image, None, size=100)
    assert whole.size == (100, 100)
