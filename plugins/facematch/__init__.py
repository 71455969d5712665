"""Face match: ``/facematch`` compares the faces in two photos and answers with a 0–100 score.

The user sends two photos in one album, or one photo and then the other (the first waits in the
command's pending state, in memory, for at most ``pending_minutes``, and is dropped on ``/cancel``, also
when the ``/cancel`` comes while the first photo is still being checked), as photos or as image files.
The answer: the score, a verdict against ``threshold``, which engine answered, and a picture of the two
compared faces side by side with the score under them.

Engines (``engine``): ``local`` — dlib on this machine (see :mod:`plugins.facematch.engines`);
``baidu`` — Baidu face match V3; ``auto`` — Baidu when its keys are configured, else local. With Baidu
the local detector still finds the faces for the picture (the whole photos are shown if it cannot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from core.chat import Command, Context, Services
from core.config import Field
from core.errors import BadImage, NoFace, ProviderMisconfigured, UserFacingError
from core.hookspecs import hookimpl
from core.i18n import load_dir
from core.images import FACE_LIMITS, open_image, prepare
from plugins.facematch.engines import (
    DEFAULT_THRESHOLD,
    BaiduFaceEngine,
    Box,
    EngineUnavailable,
    FaceScan,
    LocalFaceEngine,
    MatchResult,
)
from plugins.facematch.picture import render_pair

log = logging.getLogger(__name__)

NAME = "facematch"
#: Largest side of the image the local engine works on (photos sent as files can be much larger).
LOCAL_MAX_SIDE = 1920
BAIDU_CONTROLS = ["NONE", "LOW", "NORMAL", "HIGH"]

_engine = LocalFaceEngine()
#: ``ctx.pending`` key while a first photo is being checked: an object only that invocation holds. The
#: command stays pending meanwhile, so a ``/cancel`` (or another command) wipes ``ctx.pending``, and the
#: check then knows the photo is no longer wanted.
CHECKING = "checking_first"


# ---------------------------------------------------------------------------------------------- hooks
@hookimpl
def aipbot_config_schema() -> dict[str, Field]:
    """``plugins.facematch``: engine, threshold, Baidu's face options, and the reply picture."""
    return {
        "engine": Field(
            str,
            default="auto",
            choices=["auto", "baidu", "local"],
            help="auto: Baidu when providers.baidu has keys, else local (dlib)",
        ),
        "threshold": Field(
            float,
            default=DEFAULT_THRESHOLD,
            min=0,
            max=100,
            help="same person at or above this score (0–100), for both engines; Baidu advises 80",
        ),
        "face_type": Field(
            str,
            default="LIVE",
            choices=["LIVE", "IDCARD", "WATERMARK", "CERT"],
            help="Baidu: kind of photo (LIVE everyday photo, IDCARD chip photo, CERT document photo)",
        ),
        "quality_control": Field(
            str,
            default="NONE",
            choices=BAIDU_CONTROLS,
            help="Baidu: refuse faces below this quality (covered, blurred, badly lit)",
        ),
        "liveness_control": Field(
            str,
            default="NONE",
            choices=BAIDU_CONTROLS,
            help="Baidu: refuse faces that fail this liveness level (photos of photos)",
        ),
        "picture": Field(bool, default=True, help="answer with the two faces side by side and the score"),
    }


@hookimpl
def aipbot_messages() -> dict[str, dict[str, str]]:
    """The plugin's catalogue (``locale/en.yaml``, ``locale/zh.yaml``)."""
    return load_dir(Path(__file__).parent / "locale")


@hookimpl
def aipbot_commands(config: dict[str, Any], services: Services) -> list[Command]:
    """``/facematch``: two photos per invocation (an album is cut to two)."""
    return [Command(NAME, help="facematch.help", handler=facematch, takes_photos=True, max_photos=2)]


@hookimpl
def aipbot_status(config: dict[str, Any], services: Services) -> str:
    """Which engine answers now, and whether the local models are in memory."""
    local = "local (dlib: HOG detector, 5-point landmarks, ResNet descriptor)"
    models = "models loaded" if _engine.loaded() else "models not loaded yet"
    threshold = f"threshold {config['threshold']:g}"
    if config["engine"] == "local":
        return f"{local}, {models}, {threshold}"
    try:
        client = services.provider("baidu")
    except Exception as exc:  # a broken provider module must not break /plugins
        return f"engine {config['engine']}: Baidu client unavailable ({type(exc).__name__}), {threshold}"
    if client is None:
        if config["engine"] == "baidu":
            return f"baidu — NOT CONFIGURED (providers.baidu has no keys), {threshold}"
        return f"auto → {local} (no Baidu keys), {models}, {threshold}"
    return f"{config['engine']} → Baidu face match V3 (face_type {config['face_type']}), {threshold}; crops: {models}"


@hookimpl
def aipbot_startup(services: Services) -> None:
    """Start loading and warming the local models in a background thread; returns at once."""
    threading.Thread(target=_warm, name="facematch-warm", daemon=True).start()


@hookimpl
def aipbot_shutdown(services: Services) -> None:
    """Forget every first photo still waiting for its pair."""
    for first in list(FirstPhoto.live):
        first.clear()


def _warm() -> None:
    try:
        _engine.warm()
    except EngineUnavailable as exc:
        log.warning("facematch: local engine unavailable (%s); Baidu answers will show whole photos", exc)
    except Exception:
        log.exception("facematch: warming the local engine failed")


# ---------------------------------------------------------------------------------------------- state
@dataclass
class Side:
    """One photo of the pair, in memory: the RGB image, the bytes for Baidu, what the local engine found."""

    image: Image.Image
    data: bytes | None = None  # encoded within Baidu's limits; only for the Baidu engine
    scan: FaceScan | None = None
    boxes: list[Box] | None = None  # local detection for the picture (None: not run or unavailable)

    def __repr__(self) -> str:  # never the pixels, bytes or descriptor
        return f"Side({self.image.width}x{self.image.height}, faces={None if self.boxes is None else len(self.boxes)})"


class FirstPhoto:
    """The first photo of a pair while the command waits for the second.

    It lives in ``ctx.pending`` (the router drops it on ``/cancel``, on expiry, and when another command
    starts) and also clears itself when ``pending_minutes`` pass, so the photo is never kept longer than
    the pending window even if nobody touches the router again. The timer holds only a weak reference.
    """

    live: ClassVar[weakref.WeakSet[FirstPhoto]] = weakref.WeakSet()

    def __init__(self, side: Side) -> None:
        self.side: Side | None = side
        self._timer: asyncio.TimerHandle | None = None
        FirstPhoto.live.add(self)

    def arm(self, seconds: float) -> None:
        """Clear this photo ``seconds`` from now (replacing an earlier timer)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, FirstPhoto._expire, weakref.ref(self))

    def clear(self) -> None:
        """Drop the photo now."""
        self.side = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @staticmethod
    def _expire(ref: weakref.ref[FirstPhoto]) -> None:
        first = ref()
        if first is not None:
            first.side = None
            first._timer = None

    def __repr__(self) -> str:
        return f"FirstPhoto({self.side!r})"


# ---------------------------------------------------------------------------------------------- handler
async def facematch(ctx: Context) -> None:
    """Compare two photos (an album of two, or one photo now and one later)."""
    started = time.perf_counter()
    held = ctx.pending.pop("first", None)
    first = held.side if isinstance(held, FirstPhoto) else None
    if isinstance(held, FirstPhoto):
        held.clear()
    photos = ctx.photos
    engine = _choose_engine(ctx)
    if not photos:
        await ctx.reply(ctx.t("facematch.facematch.prompt"))
        if first is not None:
            _keep_first(ctx, first)
        ctx.expect_photo()
        return
    if len(photos) >= 2:
        first = None  # a new album replaces a photo that was waiting
        ctx.pending.pop(CHECKING, None)  # or one still being checked
        sides = []
        for index, photo in enumerate(photos[:2]):
            sides.append(await _read_side(ctx, photo, index, engine))
        a, b = sides
    elif first is None and CHECKING in ctx.pending:  # sent while the first one is still being checked
        ctx.expect_photo()
        await ctx.reply(ctx.t("facematch.still_checking_first"))
        return
    elif first is None:
        await _take_first(ctx, photos[0], engine)
        return
    else:
        a = first
        try:
            b = await _read_side(ctx, photos[0], 1, engine)
        except UserFacingError:
            _keep_first(ctx, a)  # the first photo was fine: let the user send another second one
            ctx.expect_photo()
            raise
        if engine is _engine and b.scan is not None and b.scan.count == 0:
            _keep_first(ctx, a)
            ctx.expect_photo()
            await ctx.reply(ctx.t("facematch.no_face_second_retry"))
            return
    await _compare(ctx, engine, a, b, started)


def _choose_engine(ctx: Context) -> LocalFaceEngine | BaiduFaceEngine:
    config = ctx.config
    if config["engine"] == "local":
        return _engine
    client = ctx.services.provider("baidu")
    if client is None:
        if config["engine"] == "baidu":
            raise ProviderMisconfigured("plugins.facematch.engine is baidu, but providers.baidu has no keys")
        return _engine
    return BaiduFaceEngine(
        client,
        face_type=config["face_type"],
        quality_control=config["quality_control"],
        liveness_control=config["liveness_control"],
    )


async def _take_first(ctx: Context, photo: Any, engine: LocalFaceEngine | BaiduFaceEngine) -> None:
    """Check the first photo now (so a bad one is refused at once), keep it, and ask for the second.

    The command is pending while the photo is checked: a ``/cancel`` or another command meanwhile wipes
    ``ctx.pending`` (and the router says "Cancelled"); the photo is then dropped and nothing more is said.
    """
    checking = ctx.pending[CHECKING] = object()
    ctx.expect_photo()
    try:
        side = await _read_side(ctx, photo, 0, engine)
    except UserFacingError as err:
        if not _still_wanted(ctx, checking):
            log.info("facematch: user %s cancelled while the first photo was checked (%s)", ctx.user.id, err.detail)
            return
        ctx.expect_photo()  # still waiting for a usable first photo
        raise
    if not _still_wanted(ctx, checking):
        log.info("facematch: user %s cancelled while the first photo was checked; it is dropped", ctx.user.id)
        return
    if engine is _engine and side.scan is not None and side.scan.count == 0:
        ctx.expect_photo()
        await ctx.reply(ctx.t("facematch.no_face_first_retry"))
        return
    _keep_first(ctx, side)
    ctx.expect_photo()
    await ctx.reply(ctx.t("facematch.got_first", minutes=_fmt_minutes(ctx.services.config["pending_minutes"])))


def _still_wanted(ctx: Context, checking: object) -> bool:
    """Whether the check marked by ``checking`` is still wanted (no /cancel, no newer command or album);
    ends the mark."""
    if ctx.pending.get(CHECKING) is not checking:
        return False
    del ctx.pending[CHECKING]
    return True


def _keep_first(ctx: Context, side: Side) -> None:
    first = FirstPhoto(side)
    first.arm(ctx.services.config["pending_minutes"] * 60)
    ctx.pending["first"] = first


async def _read_side(ctx: Context, photo: Any, index: int, engine: LocalFaceEngine | BaiduFaceEngine) -> Side:
    """Download, validate and (local engine) scan one photo; a bad image names the photo."""
    data = await photo.read()
    try:
        if isinstance(engine, LocalFaceEngine):
            return await ctx.run_cpu(_local_side, data)
        return await ctx.run_cpu(_baidu_side, data)
    except BadImage as err:
        which = "first" if index == 0 else "second"
        raise BadImage(
            f"{which} photo: {err.detail}", key=f"facematch.bad_{which}", problem=ctx.t(err.key, **err.params)
        ) from None


def _local_side(data: bytes) -> Side:
    """(worker thread) Decode, downscale to :data:`LOCAL_MAX_SIDE`, find faces, describe the largest."""
    image = open_image(data)
    if max(image.size) > LOCAL_MAX_SIDE:
        image.thumbnail((LOCAL_MAX_SIDE, LOCAL_MAX_SIDE), Image.BILINEAR)
    try:
        scan = _engine.scan(image)
    except EngineUnavailable as exc:
        raise UserFacingError(str(exc), key="facematch.local_unavailable") from exc
    return Side(image, scan=scan, boxes=scan.boxes)


def _baidu_side(data: bytes) -> Side:
    """(worker thread) Fit the photo to Baidu's limits (1920×1080, 2 MB base64)."""
    prepared = prepare(data, FACE_LIMITS)
    return Side(prepared.image, data=prepared.data)


def _detect_boxes(side: Side) -> list[Box] | None:
    """(worker thread) Local face boxes for the picture; None when the local engine is unavailable."""
    try:
        return _engine.detect(side.image)
    except EngineUnavailable:
        return None


async def _compare(ctx: Context, engine: LocalFaceEngine | BaiduFaceEngine, a: Side, b: Side, started: float) -> None:
    config = ctx.config
    threshold = config["threshold"]
    if isinstance(engine, LocalFaceEngine):
        assert a.scan is not None and b.scan is not None
        if a.scan.count == 0 or b.scan.count == 0:
            key = (
                "facematch.no_face_both"
                if a.scan.count == b.scan.count == 0
                else ("facematch.no_face_first" if a.scan.count == 0 else "facematch.no_face_second")
            )
            raise NoFace(f"local engine: faces {a.scan.count}/{b.scan.count}", key=key)
        result = engine.compare(a.scan, b.scan, threshold)
    else:
        assert a.data is not None and b.data is not None
        match, boxes_a, boxes_b = await asyncio.gather(
            ctx.run_blocking(engine.match, a.data, b.data, threshold),
            ctx.run_cpu(_detect_boxes, a),
            ctx.run_cpu(_detect_boxes, b),
            return_exceptions=True,
        )
        for found in (boxes_a, boxes_b):
            if isinstance(found, BaseException):
                log.warning("facematch: local detection for the picture failed: %r", found)
        a.boxes = boxes_a if isinstance(boxes_a, list) else None
        b.boxes = boxes_b if isinstance(boxes_b, list) else None
        if isinstance(match, NoFace):
            raise _which_no_face(match, a, b) from match
        if isinstance(match, BaseException):
            raise match
        result = match
    elapsed = time.perf_counter() - started
    log.info(
        "facematch: engine=%s score=%.1f threshold=%g same=%s faces=%s/%s in %.2f s",
        result.engine,
        result.score,
        result.threshold,
        result.same,
        _count(a),
        _count(b),
        elapsed,
    )
    text = _result_text(ctx, result, a, b)
    picture = None
    if config["picture"]:
        try:
            picture = await ctx.run_cpu(
                render_pair, a.image, _largest(a), b.image, _largest(b), _floor1(result.score), threshold
            )
        except Exception:
            log.exception("facematch: could not draw the picture; answering with text only")
    await ctx.reply(text, photo=picture)


def _which_no_face(err: NoFace, a: Side, b: Side) -> NoFace:
    """Baidu does not say which photo had no face: the local detector may (else: "one of the photos")."""
    missing = [side.boxes is not None and len(side.boxes) == 0 for side in (a, b)]
    key = {
        (True, True): "facematch.no_face_both",
        (True, False): "facematch.no_face_first",
        (False, True): "facematch.no_face_second",
    }.get((missing[0], missing[1]), "facematch.no_face_either")
    return NoFace(f"baidu: {err.detail}", key=key)


def _result_text(ctx: Context, result: MatchResult, a: Side, b: Side) -> str:
    verdict = ctx.t("facematch.same" if result.same else "facematch.different")
    lines = [ctx.t("facematch.result", score=f"{_floor1(result.score):.1f}", verdict=verdict)]
    if result.engine == "local":
        lines.append(ctx.t("facematch.engine_local", threshold=f"{result.threshold:g}"))
    else:
        lines.append(ctx.t("facematch.engine_baidu", threshold=f"{result.threshold:g}"))
    for side, which in ((a, "first"), (b, "second")):
        if side.boxes is not None and len(side.boxes) > 1:
            lines.append(ctx.t(f"facematch.several_faces_{which}", count=len(side.boxes)))
    if ctx.config["picture"] and result.engine == "baidu" and (not a.boxes or not b.boxes):
        lines.append(ctx.t("facematch.whole_photos"))
    return "\n".join(lines)


def _largest(side: Side) -> Box | None:
    return side.boxes[0] if side.boxes else None


def _count(side: Side) -> str:
    return "?" if side.boxes is None else str(len(side.boxes))


def _floor1(score: float) -> float:
    """The score rounded *down* to one decimal, so a shown "80.0" is never below the threshold."""
    return math.floor(score * 10) / 10


def _fmt_minutes(minutes: float) -> str:
    with contextlib.suppress(ValueError, OverflowError):
        if float(minutes).is_integer():
            return str(int(minutes))
    return f"{minutes:g}"
