"""OCR benchmark: the local engine (each PP-OCRv6 tier) and Tesseract 5 with its language data, side by side on
every set: character error rate, lines found, median wall time and CPU seconds per image; then memory.

    .venv/bin/python bench/ocr_bench.py --setup      # once: apt-get install Tesseract and its language data
    .venv/bin/python bench/ocr_bench.py [--sets text,pages,long,rotated,transparent,latin,ja,photographed]
                                        [--tiers small,tiny] [--repeat 3] [--no-tesseract] [--no-memory] [--show]

Sets: ``text`` (``examples/text``: short photos and screenshots), ``pages`` (``examples/pages``: whole document
pages), ``long`` (a 1900×1950 page of 60 lines of 20 px serif, ~1200 px each, made here), ``rotated`` (the
pages turned by 90, 180 and 270 degrees), ``transparent`` (white text on a transparent PNG, made here),
``latin`` (two lines each of French, German, Spanish, Portuguese, Italian with their accents, DejaVu Serif,
asked with ``/ocr fr`` etc.), ``ja`` (four Japanese lines in Noto Sans CJK JP, ``/ocr ja``), ``photographed``
(each page of ``examples/pages`` photographed two ways: on a table, in perspective, turned 3-4°, lit unevenly
with a shadow, blurred, JPEG 70-80 at 1280 px; ``tests/ocr_samples.py``). Every image goes through the bot's
own pipeline (``plugins.ocr.reader.read_local``: decode, flatten, detection tiles, orientation, recognition,
reading order). The tiny tier does not read Japanese (the bot says so instead): it is not run on ``ja``.

CER: Levenshtein distance between the expected and the recognised text over the length of the expected text,
with **all whitespace removed from both** (nothing else is normalised); a set's CER is the total distance over
the total length (micro-average). Lines found: expected lines for which some recognised line is at least 90 %
similar (whitespace ignored). Time: per image the median of ``--repeat`` runs (``--page-repeat`` for pages)
after a warm-up, model load excluded, as wall time and as CPU time (user + system, Tesseract's child process
included: on a shared machine wall time grows with the load); a set's time is the median over images. The last
table gives each engine's ratios against small's, measured in the same run.

Tesseract (``tesseract`` on PATH; ``--setup`` installs Debian's ``tesseract-ocr`` with ``-eng -fra -deu -spa
-por -ita -jpn -chi-sim``) reads the same bytes from stdin with the set's languages: ``eng+chi_sim``, the one
Latin language of the image (``fra`` …), ``jpn`` for ``ja``; default page segmentation; its time includes
starting the process, which is how a bot would call it. Skipped with a note when missing.

Memory: a subprocess per tier loads the engine, then reads one 8900×8900 blank PNG (greyscale, 97 KB, and
RGB); printed are its resident set with the engine loaded and idle (``VmRSS``) and the peak (``VmHWM``) after
the read.
"""

from __future__ import annotations

import argparse
import difflib
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

from plugins.ocr.engines import LocalEngine  # noqa: E402
from plugins.ocr.models import TIERS, tier_available  # noqa: E402
from plugins.ocr.reader import read_local  # noqa: E402
from tests.ocr_samples import dejavu, japanese_samples, latin_samples, photographed_samples  # noqa: E402

DEFAULT_DATA = ROOT / "examples"
#: Debian packages ``--setup`` installs: Tesseract 5 and the language data of every set.
TESSERACT_PACKAGES = [
    "tesseract-ocr",
    "tesseract-ocr-eng",
    "tesseract-ocr-fra",
    "tesseract-ocr-deu",
    "tesseract-ocr-spa",
    "tesseract-ocr-por",
    "tesseract-ocr-ita",
    "tesseract-ocr-jpn",
    "tesseract-ocr-chi-sim",
]
#: Tesseract's language for a friendly code (the default for the other sets: ``eng+chi_sim``).
TESSERACT_LANG = {"fr": "fra", "de": "deu", "es": "spa", "pt": "por", "it": "ita", "ja": "jpn"}

#: A case: (name, encoded image, expected lines, language asked for).
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


def lines_found(expected: list[str], got: str) -> int:
    """Expected lines that some recognised line matches at least 90 % (whitespace ignored)."""
    read = [squeeze(line) for line in got.splitlines() if line.strip()]
    return sum(
        1 for line in expected if any(difflib.SequenceMatcher(None, squeeze(line), r).ratio() >= 0.9 for r in read)
    )


def png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


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
    zh = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
    for number, line in enumerate(lines):
        face = ImageFont.truetype(str(zh), 36, index=2) if number == 2 and zh.exists() else dejavu(36)
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
        draw.text((60, 30 + 31 * number), line, font=dejavu(20, serif=True), fill="black")
    return [("long_page_60_lines.png", png(image), lines, None)]


def sample_set(samples: list) -> list[Case]:
    """:mod:`tests.ocr_samples` samples as cases."""
    return [(s.name, s.data, s.lines, s.language) for s in samples]


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
    return set((out.stdout + out.stderr).splitlines()[1:])  # the first line is a heading


def setup() -> int:
    """Install Tesseract 5 and its language data (Debian packages; as root or through sudo)."""
    sudo = [] if shutil.which("sudo") is None or _root() else ["sudo"]
    command = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *TESSERACT_PACKAGES]
    print("running:", " ".join(command))
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
    return subprocess.run(
        command, check=False, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"}
    ).returncode


def _root() -> bool:
    import os

    return os.geteuid() == 0


def status_mb(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in MB (``VmHWM`` does not carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def memory_child(kind: str, tier: str) -> int:
    """(subprocess) Load the engine, read the PNG on stdin (``kind``: its mode), print the figures in MB."""
    import gc

    blank = sys.stdin.buffer.read()
    engine = LocalEngine(model=tier)
    engine.warm()
    gc.collect()
    idle = status_mb("VmRSS")
    start = time.perf_counter()
    result = read_local(engine, blank)
    seconds = time.perf_counter() - start
    print(json.dumps({"kind": kind, "bytes": len(blank), "idle": idle, "after": status_mb("VmHWM"), "s": seconds,
                      "lines": len(result.lines)}))  # fmt: skip
    return 0


def measure_memory(tiers: list[str]) -> None:
    """Peak memory of reading the blank 8900×8900 image, in a fresh process each (greyscale and RGB)."""
    print("\nmemory: one blank 8900×8900 PNG, fresh process, engine loaded and warmed first (MB)")
    for tier in tiers:
        for kind in ("L", "RGB"):
            blank = png(Image.new(kind, (8900, 8900), 255 if kind == "L" else (255, 255, 255)))
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", kind, "--tiers", tier],
                input=blank,
                capture_output=True,
                check=True,
            )
            m = json.loads(out.stdout.decode().strip().splitlines()[-1])
            print(
                f"  {tier:<6}{kind:<4}{m['bytes'] // 1024:>6} KB: idle with the engine {m['idle']} MB, peak "
                f"{m['after']} MB (+{m['after'] - m['idle']} MB for the image), {m['s']:.1f} s, {m['lines']} lines"
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the sample images (examples/)")
    parser.add_argument(
        "--sets", default="text,pages,long,rotated,transparent,latin,ja,photographed", help="comma-separated sets"
    )
    parser.add_argument("--tiers", default=",".join(TIERS), help="local engine tiers (small,tiny)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per small image (median reported)")
    parser.add_argument("--page-repeat", type=int, default=1, help="timed runs per page (pages, rotated, photos)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--max-side", type=int, default=2000, help="local engine: longest side in pixels")
    parser.add_argument("--no-tesseract", action="store_true", help="skip Tesseract even when installed")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--show", action="store_true", help="print what each engine read when it is not exact")
    parser.add_argument("--setup", action="store_true", help="install Tesseract and its language data, then exit")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tiers = [t for t in args.tiers.split(",") if t]
    if args.memory_child:
        return memory_child(args.memory_child, tiers[0])
    if args.setup:
        return setup()

    makers: dict[str, Callable[[], list[Case]]] = {
        "text": lambda: expected_set(args.data / "text"),
        "pages": lambda: expected_set(args.data / "pages"),
        "rotated": lambda: rotated_set(args.data / "pages"),
        "long": long_page_set,
        "transparent": transparent_set,
        "latin": lambda: sample_set(latin_samples()),
        "ja": lambda: sample_set(japanese_samples()),
        "photographed": lambda: sample_set(photographed_samples()),
    }
    locals_: dict[str, LocalEngine] = {}
    for tier in tiers:
        if not tier_available(tier):
            print(f"local {tier}: its wheel is not installed (skipped)")
            continue
        engine = LocalEngine(args.threads, args.max_side, model=tier)
        start = time.perf_counter()
        engine.warm()
        locals_[tier] = engine
        print(f"local {tier}: PP-OCRv6 {tier} loaded and warmed in {time.perf_counter() - start:.2f} s")
    binary = None if args.no_tesseract else shutil.which("tesseract")
    langs = tesseract_langs(binary) if binary else set()
    version = (
        subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split("\n")[0] if binary else ""
    )
    print(f"tesseract: {version} ({' '.join(sorted(langs))})" if binary else "tesseract: not installed (skipped)")

    def engines(language: str | None) -> dict[str, Callable[[bytes], str]]:
        out: dict[str, Callable[[bytes], str]] = {}
        for tier, engine in locals_.items():
            if engine.reads(language):
                out[tier] = lambda d, engine=engine: read_local(engine, d, False, language).text
        if binary:
            lang = TESSERACT_LANG.get(language or "", "eng+chi_sim")
            if all(part in langs for part in lang.split("+")):
                out["tesseract"] = lambda d: subprocess.run(
                    [binary, "stdin", "stdout", "-l", lang], input=d, capture_output=True, check=True
                ).stdout.decode("utf-8", "replace")
        return out

    totals: dict[str, dict[str, tuple[float, ...]]] = {}
    for set_name in args.sets.split(","):
        cases = makers[set_name]()
        if not cases:
            print(f"\n[{set_name}] no images (a font is missing)")
            continue
        repeat = args.page_repeat if set_name in ("pages", "long", "rotated", "photographed") else args.repeat
        results: dict[str, list[tuple[float, int, int, float, int, int]]] = {}
        print(f"\n[{set_name}]")
        for name, data, lines, language in cases:
            row = f"  {name:<28}"
            for engine, run in engines(language).items():
                if repeat > 1:
                    run(data)  # warm caches for this size
                text, seconds, cpu = timed(lambda run=run, data=data: run(data), repeat)
                distance, length = cer_parts("\n".join(lines), text)
                found = lines_found(lines, text)
                results.setdefault(engine, []).append((seconds, distance, length, cpu, found, len(lines)))
                row += f"  {engine} {seconds:5.2f} s (cpu {cpu:5.2f}) {distance:>4}/{length:<5} {found}/{len(lines)}"
                if args.show and distance:
                    print(f"--- {engine} {name}:\n{text}")
            print(row)
        for engine, rows in results.items():
            distance, length = sum(r[1] for r in rows), sum(r[2] for r in rows)
            found, expected = sum(r[4] for r in rows), sum(r[5] for r in rows)
            median, cpu = statistics.median(r[0] for r in rows), statistics.median(r[3] for r in rows)
            totals.setdefault(set_name, {})[engine] = (distance, length, found, expected, median, cpu)
    print("\nper set: CER (whitespace-insensitive, micro-average), lines found, median wall time and CPU s per image")
    engine_names = [*locals_, *(["tesseract"] if binary else [])]
    print(f"{'set':<14}" + "".join(f"{name:>44}" for name in engine_names))
    for set_name, by_engine in totals.items():
        row = f"{set_name:<14}"
        for name in engine_names:
            if name not in by_engine:
                row += f"{'(not run)':>44}"
                continue
            d, n, found, expected, median, cpu = by_engine[name]
            row += f"{f'{d / n:6.2%} ({d}/{n}) {found}/{expected} {median:5.2f}s cpu {cpu:5.2f}':>44}"
        print(row)
    base = "small" if "small" in engine_names else (engine_names[0] if engine_names else None)
    if base:
        print(f"\nratios against {base} in this run (median wall time, median CPU per image)")
        for set_name, by_engine in totals.items():
            if base not in by_engine:
                continue
            parts = []
            for name, (_d, _n, _f, _e, median, cpu) in by_engine.items():
                if name != base:
                    b_median, b_cpu = by_engine[base][4], by_engine[base][5]
                    parts.append(f"{name}: time ×{median / b_median:.2f}, cpu ×{cpu / max(b_cpu, 1e-9):.2f}")
            print(f"  {set_name:<14}" + "; ".join(parts))
    if not args.no_memory:
        measure_memory(list(locals_))
    return 0


if __name__ == "__main__":
    sys.exit(main())
