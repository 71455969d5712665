"""Face match: ``/facematch`` compares the faces in two photos and answers with a 0–100 score.

The user sends two photos in one album, or one photo and then the other (the first waits in a conversation
step, ``ctx.expect_photo(SECOND, keep=[first])``: kept by reference — Telegram's ``file_id`` in the state
store, its bytes in memory only — for at most ``pending_minutes``, so a restart between the two loses
nothing; it is dropped on ``/cancel``, also when the ``/cancel`` comes while the first photo is still being
checked), as photos or as image files.
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
from pathlib import Path
from typing import Any

from core.contract.chat import Command, Context, Photo, Services
from core.contract.errors import NoFace, ProviderMisconfigured, UserFacingError
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl
from core.contract.i18n import load_dir
from core.providers import choose_engine
from plugins.facematch.engines import (
    DEFAULT_THRESHOLD,
    BaiduFaceEngine,
    Box,
    EngineUnavailable,
    LocalFaceEngine,
    MatchResult,
)
from plugins.facematch.picture import render_pair
from plugins.facematch.sides import Side, detect_boxes, read_side

log = logging.getLogger(__name__)

NAME = "facematch"
BAIDU_CONTROLS = ["NONE", "LOW", "NORMAL", "HIGH"]

#: Conversation steps: the first photo is being checked; the first photo is kept, the second is awaited.
CHECKING, SECOND = "checking", "second"


# ---------------------------------------------------------------------------------------------- the plugin
class Plugin:
    """``/facematch`` for one bot: its local engine and its config belong to this instance."""

    def __init__(self) -> None:
        self.engine = LocalFaceEngine()
        self.config: dict[str, Any] = {}
        self._warm: threading.Thread | None = None

    @hookimpl
    def aipbot_config_schema(self) -> dict[str, Field]:
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
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        """The plugin's catalogue (``locale/en.yaml``, ``locale/zh.yaml``)."""
        return load_dir(Path(__file__).parent / "locale")

    @hookimpl
    def aipbot_configure(self, config: dict[str, Any]) -> None:
        """Keep the validated section (engine, threshold, Baidu's options, the picture)."""
        self.config = config

    @hookimpl
    def aipbot_commands(self) -> list[Command]:
        """``/facematch``: two photos per invocation (an album is cut to two)."""
        return [Command(NAME, help="facematch.help", handler=self.facematch, takes_photos=True, max_photos=2)]

    @hookimpl
    def aipbot_status(self, config: dict[str, Any], services: Services) -> str:
        """Which engine answers now, and whether the local models are in memory."""
        local = "local (dlib: HOG detector, 5-point landmarks, ResNet descriptor)"
        models = "models loaded" if self.engine.loaded() else "models not loaded yet"
        threshold = f"threshold {config['threshold']:g}"
        try:
            client = choose_engine(services, config["engine"], "plugins.facematch.engine", needs="face")
        except ProviderMisconfigured:
            return f"baidu — NOT CONFIGURED (providers.baidu has no keys), {threshold}"
        except Exception as exc:  # a broken provider module must not break /plugins
            return f"engine {config['engine']}: Baidu client unavailable ({type(exc).__name__}), {threshold}"
        if client is None:
            why = "" if config["engine"] == "local" else "auto → "
            return f"{why}{local}{' (no Baidu keys)' if why else ''}, {models}, {threshold}"
        return (
            f"{config['engine']} → Baidu face match V3 (face_type {config['face_type']}), {threshold}; crops: {models}"
        )

    @hookimpl
    def aipbot_startup(self, services: Services) -> None:
        """Start loading and warming the local models in a background thread; returns at once."""
        if not services.handles_updates:
            return
        self._warm = threading.Thread(target=self._warm_engine, name="facematch-warm", daemon=True)
        self._warm.start()

    @hookimpl
    def aipbot_shutdown(self) -> None:
        """Wait (briefly) for a warm-up still loading, so no native thread outlives the bot."""
        if self._warm is not None:
            self._warm.join(timeout=30)

    def _warm_engine(self) -> None:
        try:
            self.engine.warm()
        except EngineUnavailable as exc:
            log.warning("facematch: local engine unavailable (%s); Baidu answers will show whole photos", exc)
        except Exception:
            log.exception("facematch: warming the local engine failed")

    def choose(self, ctx: Context) -> LocalFaceEngine | BaiduFaceEngine:
        config = ctx.config
        client = choose_engine(ctx.services, config["engine"], "plugins.facematch.engine", needs="face")
        if client is None:
            return self.engine
        return BaiduFaceEngine(
            client,
            face_type=config["face_type"],
            quality_control=config["quality_control"],
            liveness_control=config["liveness_control"],
        )

    # ------------------------------------------------------------------------------------------ handler
    async def facematch(self, ctx: Context) -> None:
        """Compare two photos (an album of two, or one photo now and one later)."""
        started = time.perf_counter()
        engine = self.choose(ctx)
        first = ctx.kept[0] if ctx.kept else None
        if not ctx.photos:
            await ctx.expect_photo(ctx.step, keep=ctx.kept)
            await ctx.reply(ctx.t("facematch.facematch.prompt"))
            return
        if len(ctx.photos) >= 2:  # a new album replaces a photo that was waiting, or one still being checked
            a, b = [await read_side(ctx, photo, index, engine) for index, photo in enumerate(ctx.photos[:2])]
        elif ctx.step == CHECKING:  # sent while the first one is still being checked
            await ctx.expect_photo(CHECKING, keep=ctx.kept)
            await ctx.reply(ctx.t("facematch.still_checking_first"))
            return
        elif first is None:
            await self._take_first(ctx, ctx.photos[0], engine)
            return
        else:
            try:
                a = await read_side(ctx, first, 0, engine)
                b = await read_side(ctx, ctx.photos[0], 1, engine)
            except UserFacingError:
                await ctx.expect_photo(SECOND, keep=[first])  # the first photo was fine: send another second
                raise
            if engine is self.engine and b.scan is not None and b.scan.count == 0:
                await ctx.expect_photo(SECOND, keep=[first])
                await ctx.reply(ctx.t("facematch.no_face_second_retry"))
                return
        await _compare(ctx, engine, self.engine, a, b, started)

    async def _take_first(self, ctx: Context, photo: Photo, engine: LocalFaceEngine | BaiduFaceEngine) -> None:
        """Check the first photo now (so a bad one is refused at once), keep it, and ask for the second.

        The conversation waits while the photo is checked: a ``/cancel`` or another command meanwhile ends
        it (and the router says "Cancelled"); the photo is then dropped and nothing more is said.
        """
        await ctx.expect_photo(CHECKING, keep=[photo])
        try:
            side = await read_side(ctx, photo, 0, engine)
        except UserFacingError as err:
            if not await ctx.still_current():
                log.info("facematch: user %s cancelled while the first photo was checked (%s)", ctx.user.id, err.detail)
                return
            await ctx.expect_photo()  # still waiting for a usable first photo
            raise
        if not await ctx.still_current():
            log.info("facematch: user %s cancelled while the first photo was checked; it is dropped", ctx.user.id)
            return
        if engine is self.engine and side.scan is not None and side.scan.count == 0:
            await ctx.expect_photo()
            await ctx.reply(ctx.t("facematch.no_face_first_retry"))
            return
        await ctx.expect_photo(SECOND, keep=[photo])
        await ctx.reply(ctx.t("facematch.got_first", minutes=_fmt_minutes(ctx.services.config["pending_minutes"])))


# ---------------------------------------------------------------------------------------------- the answer
async def _compare(
    ctx: Context, engine: LocalFaceEngine | BaiduFaceEngine, local: LocalFaceEngine, a: Side, b: Side, started: float
) -> None:
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
            ctx.run_cpu(detect_boxes, local, a),
            ctx.run_cpu(detect_boxes, local, b),
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
