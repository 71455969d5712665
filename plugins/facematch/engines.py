"""Face-match engines: the local dlib engine and a thin wrapper over Baidu's face match V3.

Local engine (:class:`LocalFaceEngine`)
    dlib's HOG frontal face detector finds faces, the 5-point landmark model aligns the largest one,
    and dlib's ResNet model turns it into a 128-number descriptor. Two faces are compared by the
    Euclidean distance of their descriptors, mapped to a 0–100 score (:func:`distance_to_score`).

    Detection runs on a downscaled copy (fast) and falls back to more resolution only when it finds
    nothing (:data:`DETECTION_TIERS`): faces of 45 px in a 1920×1080 image are still found. Landmarks
    and the descriptor are always computed on the full image, so a downscaled detection costs no
    accuracy.

Score mapping (local)
    Piecewise linear in the descriptor distance ``d``, anchored at dlib's documented same-person
    threshold 0.6 ↔ score 80 (Baidu's recommended threshold), so one ``threshold`` in score units means
    the same thing for both engines::

        d:      0.0   0.30  0.40  0.60  0.80  0.90  ≥1.0
        score:  100   90    86.7  80    40    20    0

    Below 0.6 the score falls slowly (20 points over 0.6: same-person pairs land around 85–90, like
    Baidu's), above it quickly (80 points over 0.4: different people land around 30–40), so the
    number a user sees is far from the threshold whenever the decision is clear.

Threads
    dlib's Python objects are not safe to use from several threads at once (the detector's scanner and
    the network keep per-call state; davisking/dlib#998), so every dlib call goes through one lock per
    process. The detector releases the GIL while it runs; the face descriptor does *not* (measured:
    the event loop stalls about 0.1 s per face even though the work runs in a worker thread).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""A face box ``(left, top, right, bottom)`` in the pixel coordinates of the image it was found in
(it may reach past the image's edges when a face is cut off)."""

#: Detection passes, tried in order until one finds a face: (longest side of the detection copy,
#: times dlib upsamples it). dlib's HOG window finds faces of about 80 px, so on a 1920×1080 image the
#: passes find faces ≥ 240 px, ≥ 120 px and ≥ 40 px. Most photos are settled by the first (~30 ms).
DETECTION_TIERS: tuple[tuple[int, int], ...] = ((640, 0), (640, 1), (1280, 1))

#: dlib's documented threshold: descriptors closer than this are the same person (99.38 % on LFW).
DLIB_SAME_DISTANCE = 0.6

#: The score at which two faces count as the same person, for both engines (Baidu recommends 80).
DEFAULT_THRESHOLD = 80.0

# (distance, score) anchors of the piecewise-linear mapping; see the module docstring.
_ANCHORS = ((0.0, 100.0), (DLIB_SAME_DISTANCE, DEFAULT_THRESHOLD), (1.0, 0.0))


def distance_to_score(distance: float) -> float:
    """The 0–100 score for a descriptor distance (monotonically decreasing; 0.6 ↔ 80)."""
    ds = [d for d, _ in _ANCHORS]
    ss = [s for _, s in _ANCHORS]
    return float(np.interp(max(0.0, distance), ds, ss))


def score_to_distance(score: float) -> float:
    """The descriptor distance for a 0–100 score (the inverse of :func:`distance_to_score`)."""
    ds = [d for d, _ in reversed(_ANCHORS)]
    ss = [s for _, s in reversed(_ANCHORS)]
    return float(np.interp(min(100.0, max(0.0, score)), ss, ds))


class EngineUnavailable(RuntimeError):
    """The local engine cannot run (dlib or its model files are missing)."""


@dataclass
class FaceScan:
    """The faces found in one image: ``boxes`` largest first, and the descriptor of the largest."""

    boxes: list[Box]
    descriptor: np.ndarray | None = field(default=None, repr=False)  # biometric: never log it

    @property
    def count(self) -> int:
        return len(self.boxes)

    @property
    def largest(self) -> Box | None:
        return self.boxes[0] if self.boxes else None


@dataclass
class MatchResult:
    """The answer of a comparison, whichever engine gave it."""

    engine: str  # "local" or "baidu"
    score: float  # 0–100
    threshold: float
    distance: float | None = None  # local engine only

    @property
    def same(self) -> bool:
        return self.score >= self.threshold


@dataclass
class _Models:
    detector: Any
    landmarks: Any
    recogniser: Any


_models: _Models | None = None
_load_lock = threading.Lock()
_dlib_lock = threading.Lock()  # dlib objects are not thread-safe: one call at a time per process


#: Model files of the ``face_recognition_models`` package, by role.
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recogniser": "dlib_face_recognition_resnet_model_v1.dat",
}


def model_path(role: str) -> Path:
    """Where ``face_recognition_models`` keeps a model file, found *without importing* the package.

    Its ``__init__`` imports ``pkg_resources``, which setuptools ≥ 81 no longer ships; the files are
    plain data beside it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise EngineUnavailable("the face_recognition_models package is not installed")
    path = Path(spec.origin).parent / "models" / MODEL_FILES[role]
    if not path.is_file():
        raise EngineUnavailable(f"model file missing: {path}")
    return path


def _load_models() -> _Models:
    global _models
    with _load_lock:
        if _models is None:
            started = time.perf_counter()
            try:
                import dlib
            except ImportError as exc:
                raise EngineUnavailable(f"the local face engine needs dlib (pip install dlib-bin): {exc}") from exc
            try:
                _models = _Models(
                    detector=dlib.get_frontal_face_detector(),
                    landmarks=dlib.shape_predictor(str(model_path("landmarks"))),
                    recogniser=dlib.face_recognition_model_v1(str(model_path("recogniser"))),
                )
            except RuntimeError as exc:  # dlib raises RuntimeError for a corrupt model file
                raise EngineUnavailable(f"cannot load the dlib face models: {exc}") from exc
            log.info("local face engine: models loaded in %.2f s", time.perf_counter() - started)
        return _models


class LocalFaceEngine:
    """dlib face detection and descriptors. Blocking and CPU-bound: call it from a worker thread.

    The models are loaded once per process (on :meth:`load`, or on first use) and shared by every
    instance.
    """

    name = "local"

    def __init__(self, tiers: tuple[tuple[int, int], ...] = DETECTION_TIERS) -> None:
        self.tiers = tiers

    @staticmethod
    def loaded() -> bool:
        """True once the models are in memory."""
        return _models is not None

    def load(self) -> None:
        """Load the models (once per process). Raises :class:`EngineUnavailable`."""
        _load_models()

    def warm(self) -> None:
        """Load the models and run each once, so the first user does not wait for either."""
        started = time.perf_counter()
        models = _load_models()
        blank = np.full((160, 160, 3), 128, dtype=np.uint8)
        with _dlib_lock:
            import dlib

            models.detector(blank, 0)
            shape = models.landmarks(blank, dlib.rectangle(40, 40, 120, 120))
            models.recogniser.compute_face_descriptor(blank, shape, 0)
        log.info("local face engine: warm in %.2f s", time.perf_counter() - started)

    def detect(self, image: Image.Image) -> list[Box]:
        """Face boxes in ``image`` (RGB), largest first; empty when no pass of the cascade finds one."""
        models = _load_models()
        width, height = image.size
        tried: set[tuple[float, int]] = set()
        for max_side, upsample in self.tiers:
            scale = min(1.0, max_side / max(width, height))
            if (scale, upsample) in tried:
                continue
            tried.add((scale, upsample))
            copy = image
            if scale < 1.0:
                copy = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
            pixels = np.asarray(copy)
            with _dlib_lock:
                found = models.detector(pixels, upsample)
            boxes = [_unscale(r, scale) for r in found]
            if boxes:
                return sorted(boxes, key=_area, reverse=True)
        return []

    def describe(self, image: Image.Image, box: Box) -> np.ndarray:
        """The 128-number descriptor of the face in ``box`` (landmarks and descriptor on the full image)."""
        import dlib

        models = _load_models()
        pixels = np.asarray(image)
        rect = dlib.rectangle(*box)
        with _dlib_lock:
            shape = models.landmarks(pixels, rect)
            descriptor = models.recogniser.compute_face_descriptor(pixels, shape, 0)
        return np.asarray(descriptor, dtype=np.float64)

    def scan(self, image: Image.Image) -> FaceScan:
        """Detect faces and describe the largest (no descriptor when there is no face)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        boxes = self.detect(image)
        descriptor = self.describe(image, boxes[0]) if boxes else None
        return FaceScan(boxes, descriptor)

    @staticmethod
    def compare(a: FaceScan, b: FaceScan, threshold: float = DEFAULT_THRESHOLD) -> MatchResult:
        """Score two scans that each found a face."""
        if a.descriptor is None or b.descriptor is None:
            raise ValueError("both scans need a face")
        distance = float(np.linalg.norm(a.descriptor - b.descriptor))
        return MatchResult("local", distance_to_score(distance), threshold, distance)


class BaiduFaceEngine:
    """Baidu face match V3 with this plugin's settings. Blocking (HTTP): call it from an I/O thread."""

    name = "baidu"

    def __init__(
        self,
        client: Any,
        *,
        face_type: str = "LIVE",
        quality_control: str = "NONE",
        liveness_control: str = "NONE",
    ) -> None:
        self.client = client
        self.face_type = face_type
        self.quality_control = quality_control
        self.liveness_control = liveness_control

    def match(self, a: bytes, b: bytes, threshold: float = DEFAULT_THRESHOLD) -> MatchResult:
        """Compare two encoded images (JPEG/PNG within Baidu's limits). Raises the client's errors."""
        answer = self.client.face_match(
            a,
            b,
            face_type=self.face_type,
            quality_control=self.quality_control,
            liveness_control=self.liveness_control,
        )
        return MatchResult("baidu", float(answer.score), threshold)


def _unscale(rect: Any, scale: float) -> Box:
    return (
        round(rect.left() / scale),
        round(rect.top() / scale),
        round(rect.right() / scale),
        round(rect.bottom() / scale),
    )


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])
