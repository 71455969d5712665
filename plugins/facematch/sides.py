"""One photo of a face-match pair: read, validated and (local engine) scanned in worker threads."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from core.contract.chat import Context, Photo
from core.contract.errors import BadImage, UserFacingError
from core.infra.images import FACE_LIMITS, open_image, prepare
from plugins.facematch.engines import BaiduFaceEngine, Box, EngineUnavailable, FaceScan, LocalFaceEngine

#: Largest side of the image the local engine works on (photos sent as files can be much larger).
LOCAL_MAX_SIDE = 1920


@dataclass
class Side:
    """One photo of the pair, in memory: the RGB image, the bytes for Baidu, what the local engine found."""

    image: Image.Image
    data: bytes | None = None  # encoded within Baidu's limits; only for the Baidu engine
    scan: FaceScan | None = None
    boxes: list[Box] | None = None  # local detection for the picture (None: not run or unavailable)

    def __repr__(self) -> str:  # never the pixels, bytes or descriptor
        return f"Side({self.image.width}x{self.image.height}, faces={None if self.boxes is None else len(self.boxes)})"


async def read_side(ctx: Context, photo: Photo, index: int, engine: LocalFaceEngine | BaiduFaceEngine) -> Side:
    """Download, validate and (local engine) scan one photo; a bad image names the photo."""
    data = await photo.read()
    try:
        if isinstance(engine, LocalFaceEngine):
            return await ctx.run_cpu(_local_side, engine, data)
        return await ctx.run_cpu(_baidu_side, data)
    except BadImage as err:
        which = "first" if index == 0 else "second"
        raise BadImage(
            f"{which} photo: {err.detail}", key=f"facematch.bad_{which}", problem=ctx.t(err.key, **err.params)
        ) from None


def _local_side(engine: LocalFaceEngine, data: bytes) -> Side:
    """(worker thread) Decode, downscale to :data:`LOCAL_MAX_SIDE`, find faces, describe the largest."""
    image = open_image(data)
    if max(image.size) > LOCAL_MAX_SIDE:
        image.thumbnail((LOCAL_MAX_SIDE, LOCAL_MAX_SIDE), Image.BILINEAR)
    try:
        scan = engine.scan(image)
    except EngineUnavailable as exc:
        raise UserFacingError(str(exc), key="facematch.local_unavailable") from exc
    return Side(image, scan=scan, boxes=scan.boxes)


def _baidu_side(data: bytes) -> Side:
    """(worker thread) Fit the photo to Baidu's limits (1920×1080, 2 MB base64)."""
    prepared = prepare(data, FACE_LIMITS)
    return Side(prepared.image, data=prepared.data)


def detect_boxes(local: LocalFaceEngine, side: Side) -> list[Box] | None:
    """(worker thread) Local face boxes for the picture; None when the local engine is unavailable."""
    try:
        return local.detect(side.image)
    except EngineUnavailable:
        return None
