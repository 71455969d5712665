"""Local face engine benchmark: latency per pair and the score of every pair of the test faces.

    .venv/bin/python bench/face_bench.py [--rounds 5] [--faces examples/faces]

Per pair it times what ``/facematch`` does with the local engine: decode and orient both photos
(``core.infra.images.open_image``), downscale to 1920 px, detect, align and describe the largest face of each,
and compare; the reply picture is timed separately. Then it prints the descriptor distance and score of
every same-person and different-person pair, and the margin on each side of the threshold.
Person = file name up to the last ``_`` (``obama_1`` and ``obama_2`` are one person).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from core.infra.images import open_image
from plugins.facematch.engines import (
    DEFAULT_THRESHOLD,
    DLIB_SAME_DISTANCE,
    FaceScan,
    LocalFaceEngine,
    distance_to_score,
)
from plugins.facematch.picture import render_pair
from plugins.facematch.sides import LOCAL_MAX_SIDE

DEFAULT_FACES = Path(__file__).resolve().parents[1] / "examples" / "faces"


def side(engine: LocalFaceEngine, data: bytes) -> tuple[Image.Image, FaceScan]:
    """What the plugin does with one photo (``plugins.facematch.sides._local_side``)."""
    image = open_image(data)
    if max(image.size) > LOCAL_MAX_SIDE:
        image.thumbnail((LOCAL_MAX_SIDE, LOCAL_MAX_SIDE), Image.BILINEAR)
    return image, engine.scan(image)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="times every pair is timed (default 5)")
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of <person>_<n>.jpg photos")
    args = parser.parse_args()

    files = sorted(p for p in args.faces.glob("*.jpg"))
    portraits = {p.stem: p.read_bytes() for p in files if p.stem.rsplit("_", 1)[-1].isdigit()}
    others = {p.stem: p.read_bytes() for p in files if p.stem not in portraits}
    person = {name: name.rsplit("_", 1)[0] for name in portraits}

    engine = LocalFaceEngine()
    started = time.perf_counter()
    engine.load()
    loaded = time.perf_counter() - started
    engine.warm()
    warm = time.perf_counter() - started
    print(f"models: loaded in {ms(loaded)}, loaded + warmed in {ms(warm)}")

    print("\nfaces found (detection passes: longest side, upsampling):", engine.tiers)
    for name, data in {**portraits, **others}.items():
        t0 = time.perf_counter()
        image, scan = side(engine, data)
        took = time.perf_counter() - t0
        sizes = ", ".join(f"{b[2] - b[0]}px" for b in scan.boxes)
        print(f"  {name:<12} {image.width}x{image.height}  {scan.count} face(s) [{sizes}]  {ms(took)}")

    pairs = list(itertools.combinations(sorted(portraits), 2))
    timings: list[float] = []
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for _ in range(args.rounds):
        for a, b in pairs:
            t0 = time.perf_counter()
            (_, scan_a), (_, scan_b) = side(engine, portraits[a]), side(engine, portraits[b])
            result = LocalFaceEngine.compare(scan_a, scan_b)
            timings.append(time.perf_counter() - t0)
            results[(a, b)] = (result.distance or 0.0, result.score)

    image_a, scan_a = side(engine, portraits[pairs[0][0]])
    image_b, scan_b = side(engine, portraits[pairs[0][1]])
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        render_pair(image_a, scan_a.largest, image_b, scan_b.largest, 88.0, DEFAULT_THRESHOLD)
    picture = (time.perf_counter() - t0) / args.rounds

    print(f"\nlatency per pair, local engine ({len(pairs)} pairs × {args.rounds} rounds = {len(timings)} runs,")
    print("decode + detect + landmarks + descriptor for both photos + compare):")
    print(f"  median {ms(statistics.median(timings))}   max {ms(max(timings))}   min {ms(min(timings))}")
    print(f"  reply picture (crop, draw, JPEG): {ms(picture)} per pair")

    threshold_distance = DLIB_SAME_DISTANCE
    print(f"\nscores (threshold {DEFAULT_THRESHOLD:g} = distance {threshold_distance}; same person at or above):")
    same, different = [], []
    for (a, b), (distance, score) in sorted(results.items(), key=lambda kv: kv[1][0]):
        is_same = person[a] == person[b]
        verdict = "same" if score >= DEFAULT_THRESHOLD else "different"
        ok = "ok" if (verdict == "same") == is_same else "WRONG"
        (same if is_same else different).append(score)
        kind = "same person " if is_same else "different   "
        print(f"  {kind} {a:<10} {b:<10} distance {distance:.3f}  score {score:5.1f}  → {verdict:<9} {ok}")
    if same:
        print(
            f"\nmargin: lowest same-person score {min(same):.1f} (+{min(same) - DEFAULT_THRESHOLD:.1f} above)", end=""
        )
    if different:
        print(f", highest different-people score {max(different):.1f} ({max(different) - DEFAULT_THRESHOLD:.1f})")
    print(f"score at dlib's 0.6: {distance_to_score(0.6):.1f}")
    wrong = sum(((results[p][1] >= DEFAULT_THRESHOLD) != (person[p[0]] == person[p[1]])) for p in results)
    print(f"wrong verdicts: {wrong} of {len(results)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
