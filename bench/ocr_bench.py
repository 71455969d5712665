"""OCR benchmark: per-image latency and character error rate of the local engine (and Tesseract).

    .venv/bin/python bench/ocr_bench.py [--data /work/shared/data/text] [--repeat 3] [--threads 0]

For every image of ``expected.json`` in the data directory it runs the bot's own pipeline (the image
prepared as the plugin prepares it, RapidOCR, the shared reading-order function) and prints the latency
(median of ``--repeat`` runs after one warm-up, model load excluded) and the character error rate.

CER: Levenshtein distance between the expected text and the recognised text divided by the length of
the expected text, with **all whitespace removed from both** (the only normalisation: case,
punctuation, traditional vs simplified Chinese all count). The set's CER is the total distance over the
total length (micro-average), so long images weigh more than short ones.

When the ``tesseract`` binary is on PATH, the same figures are printed for it side by side
(``-l eng+chi_sim`` when the Chinese data is installed, else ``eng``; its latency includes starting the
process, which is how a bot would call it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import images
from plugins.ocr.engines import LocalEngine
from plugins.ocr.layout import build_lines, lines_text
from plugins.ocr.reader import local_limits

DEFAULT_DATA = Path("/work/shared/data/text")


def squeeze(text: str) -> str:
    """``text`` without any whitespace."""
    return "".join(text.split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer_parts(expected: str, got: str) -> tuple[int, int]:
    """(edit distance, reference length), whitespace-insensitive."""
    ref = squeeze(expected)
    return levenshtein(ref, squeeze(got)), len(ref)


def timed(fn: Callable[[], str], repeat: int) -> tuple[str, float]:
    """The result of ``fn`` and its median wall time over ``repeat`` runs."""
    times, text = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        text = fn()
        times.append(time.perf_counter() - start)
    return text, statistics.median(times)


def local_reader(engine: LocalEngine, data: bytes) -> Callable[[], str]:
    """One recognition with the bot's pipeline: prepare, recognise, rebuild lines."""

    def run() -> str:
        prepared = images.prepare(data, local_limits(engine.max_side))
        return lines_text(build_lines(engine.read(prepared.image)))

    return run


def tesseract_langs(binary: str) -> str:
    """``eng+chi_sim`` when Tesseract has Chinese data, else ``eng``."""
    out = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, check=False)
    langs = set((out.stdout + out.stderr).split())
    return "eng+chi_sim" if "chi_sim" in langs else "eng"


def tesseract_reader(binary: str, langs: str, path: Path) -> Callable[[], str]:
    """One Tesseract run on ``path`` (text to stdout)."""

    def run() -> str:
        out = subprocess.run([binary, str(path), "stdout", "-l", langs], capture_output=True, check=True)
        return out.stdout.decode("utf-8", "replace")

    return run


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with expected.json")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--max-side", type=int, default=2000, help="local engine: longest side in pixels")
    parser.add_argument("--det-side", type=int, default=960, help="local engine: detection resolution")
    parser.add_argument("--no-tesseract", action="store_true", help="skip Tesseract even when installed")
    parser.add_argument("--show", action="store_true", help="print what each engine read")
    args = parser.parse_args(argv)

    expected: dict[str, list[str]] = json.loads((args.data / "expected.json").read_text(encoding="utf-8"))
    engines: dict[str, Callable[[Path, bytes], Callable[[], str]]] = {}

    local = LocalEngine(args.threads, args.max_side, args.det_side)
    start = time.perf_counter()
    local.warm()
    print(
        f"local engine: RapidOCR loaded and warmed in {time.perf_counter() - start:.2f} s "
        f"(threads={args.threads or 'auto'}, max_side={args.max_side}, det_side={args.det_side})"
    )
    engines["local"] = lambda path, data: local_reader(local, data)

    binary = None if args.no_tesseract else shutil.which("tesseract")
    if binary:
        langs = tesseract_langs(binary)
        print(f"tesseract: {binary} -l {langs}")
        engines["tesseract"] = lambda path, data: tesseract_reader(binary, langs, path)
    else:
        print("tesseract: not installed (local engine only)")

    results: dict[str, dict[str, tuple[float, int, int]]] = {name: {} for name in engines}
    for file_name, lines in expected.items():
        path = args.data / file_name
        data = path.read_bytes()
        for name, make in engines.items():
            run = make(path, data)
            run()  # warm caches for this image size
            text, latency = timed(run, args.repeat)
            distance, length = cer_parts("\n".join(lines), text)
            results[name][file_name] = (latency, distance, length)
            if args.show:
                print(f"--- {name} {file_name}:\n{text}")

    names = list(engines)
    header = f"{'image':<16}" + "".join(f"{n + ' ms':>16}{n + ' CER':>16}" for n in names)
    print()
    print(header)
    print("-" * len(header))
    for file_name in expected:
        row = f"{file_name:<16}"
        for name in names:
            latency, distance, length = results[name][file_name]
            row += f"{latency * 1000:>16.0f}{f'{distance}/{length} {distance / length:.1%}':>16}"
        print(row)
    print("-" * len(header))
    summary = f"{'all':<16}"
    for name in names:
        latencies = [r[0] for r in results[name].values()]
        distance = sum(r[1] for r in results[name].values())
        length = sum(r[2] for r in results[name].values())
        summary += (
            f"{statistics.median(latencies) * 1000:>13.0f} md{f'{distance}/{length} {distance / length:.2%}':>16}"
        )
    print(summary)
    print("(ms: per-image median of runs; 'md': median over images. CER: whitespace-insensitive, micro-average.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
