"""OCR: ``/ocr`` reads the text in a photo (or a PDF) and answers with it, lines in reading order.

Usage: ``/ocr`` with a photo (as its caption, or first and the photo next; an album reads each image);
``/ocr <language>`` (``en``, ``zh``, ``ja``, ``ko``, ``fr``, ``de``, ``es``, ``ru``, ``pt``, ``it``) for one
request; ``/ocr boxes`` to get the photo back with each recognised line outlined (when ``annotate`` is on).
Both may be combined: ``/ocr en boxes``.

Engines (``engine``): ``local`` — PP-OCRv6 on this machine (:mod:`plugins.ocr.engines`), loaded and warmed
in the background at start-up; ``baidu`` — Baidu OCR (``api``, ``language_type``, ``detect_direction``);
``auto`` — Baidu when its keys are configured, else local. Both go through one reading-order function
(:mod:`plugins.ocr.layout`).

The language argument: with Baidu it sets ``language_type`` for that request. The local engine (PP-OCRv6,
``model: small | tiny``, :mod:`plugins.ocr.models`) reads Chinese, English, Japanese (small only) and the Latin
languages with one model, so the argument changes nothing there; a language it cannot read (ko, ru; ja on
tiny) goes to Baidu when its keys are configured, else the answer says the bot cannot read that script.

PDF documents (:mod:`plugins.ocr.pdf`): each page's text layer, else the page rendered and read; one section
per page, progress in one edited status message, at most ``max_pdf_pages`` pages (a note says when there were
more). Whole pages, rotation and memory bounds of the local engine: :mod:`plugins.ocr.page`.

Replies: the text; "no text found"; over 4096 characters a ``.txt`` file; an album gets one section per
image ("Image 1", …); an unusable image gets its own clear message (per image in an album). A problem only
the admin can fix (Baidu misconfigured or its quota used up) stops the album there: what was read so far is
sent, then the error goes to the router, which tells the user and alerts the admins. Recognised text is
never logged (it may be personal) and images are never written to disk.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.contract.chat import Command, Context, Document, Reply, Services
from core.contract.errors import ProviderMisconfigured, UserFacingError
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl
from core.contract.i18n import load_dir
from core.infra.images import DOCUMENT_MIME_TYPES
from core.providers import choose_engine as core_choose_engine
from plugins.ocr.engines import (
    BAIDU_APIS,
    BAIDU_LANGUAGE_TYPES,
    LANGUAGES,
    LOCAL_LANGUAGES,
    BaiduEngine,
    LocalEngine,
    local_engine,
    local_language_note,
    parse_language,
)
from plugins.ocr.models import TIERS
from plugins.ocr.pdf import is_pdf, read_pdf, to_png
from plugins.ocr.reader import STOP_ERRORS, PageResult, finish, prepare_for_baidu, read_image, read_local

log = logging.getLogger(__name__)

NAME = "ocr"
#: Telegram's limit for one message; longer text goes out as a file.
MAX_MESSAGE = 4096
#: ``/ocr boxes``: also send the photo with the recognised lines outlined.
BOXES_ARGS = ("boxes", "box")


# ---------------------------------------------------------------------------------------------- the plugin
def config_schema() -> dict[str, Field]:
    """``plugins.ocr``: engine choice, Baidu options, local engine settings, album size, annotation."""
    return {
        "engine": Field(
            str, default="auto", choices=["auto", "baidu", "local"], help="auto: baidu with keys, else local"
        ),
        "api": Field(str, default="general_basic", choices=list(BAIDU_APIS), help="Baidu OCR endpoint"),
        "language_type": Field(
            str, default="CHN_ENG", choices=list(BAIDU_LANGUAGE_TYPES), help="Baidu language when /ocr names none"
        ),
        "detect_direction": Field(bool, default=False, help="Baidu: detect and undo a rotated image"),
        "annotate": Field(bool, default=True, help="allow /ocr boxes: the photo back with the lines outlined"),
        "threads": Field(int, default=0, min=0, max=64, help="local engine: CPU threads per image (0: all cores)"),
        "model": Field(
            str,
            default="small",
            choices=list(TIERS),
            help="local engine: PP-OCRv6 small (every language it covers) or tiny (~3x less CPU, no Japanese)",
        ),
        "max_side": Field(
            int, default=2000, min=640, max=4096, help="local engine: downscale to this longest side (pixels)"
        ),
        "max_photos": Field(int, default=10, min=1, max=10, help="images read from one album"),
        "max_pdf_pages": Field(int, default=20, min=1, max=500, help="pages read from one PDF (the rest: a note)"),
    }


class Plugin:
    """``/ocr`` for one bot: its config and the thread that warms its local engine belong to this instance
    (the model itself is loaded once per process and setting: :func:`plugins.ocr.engines.local_engine`)."""

    def __init__(self) -> None:
        self._warm: threading.Thread | None = None

    @hookimpl
    def aipbot_config_schema(self) -> dict[str, Field]:
        return config_schema()

    @hookimpl
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        """The plugin's catalogue (``locale/en.yaml``, ``locale/zh.yaml``)."""
        return load_dir(Path(__file__).parent / "locale")

    @hookimpl
    def aipbot_commands(self, config: dict[str, Any]) -> list[Command]:
        """``/ocr``: takes a photo or an album of up to ``max_photos``, and PDF documents."""
        limit = config["max_photos"]
        return [Command("ocr", "ocr.help", handle, takes_photos=True, max_photos=limit, documents=DOCUMENT_MIME_TYPES)]

    @hookimpl
    def aipbot_status(self, config: dict[str, Any], services: Services) -> str:
        """``engine: local (PP-OCRv6 small)`` or ``engine: baidu (accurate_basic)``, with ``auto`` when chosen so."""
        try:
            engine = choose_engine(config, services)
        except ProviderMisconfigured:
            return "engine: baidu (no Baidu keys configured!)"
        return f"engine: {engine.describe()}" + (" (auto)" if config["engine"] == "auto" else "")

    @hookimpl
    def aipbot_startup(self, config: dict[str, Any], services: Services) -> None:
        """Warm the local engine in a background thread when it is the one in use; returns at once."""
        if not services.handles_updates:
            return
        try:
            engine = choose_engine(config, services)
        except ProviderMisconfigured as err:
            log.warning("ocr: %s", err.detail)
            return
        if isinstance(engine, LocalEngine) and not engine.loaded:
            self._warm = threading.Thread(target=_warm, args=(engine,), name="aipbot-ocr-warm", daemon=True)
            self._warm.start()

    @hookimpl
    def aipbot_shutdown(self) -> None:
        """Wait (bounded) for a warm-up still loading, so no native thread outlives the bot."""
        if self._warm is not None:
            self._warm.join(timeout=30)


def _warm(engine: LocalEngine) -> None:
    try:
        started = time.perf_counter()
        engine.warm()
        log.info("ocr: local engine ready in %.1f s", time.perf_counter() - started)
    except Exception:  # the first request will try again and report
        log.exception("ocr: warming the local engine failed")


# ---------------------------------------------------------------------------------------------- engines
def choose_engine(config: dict[str, Any], services: Services, language: str | None = None) -> LocalEngine | BaiduEngine:
    """The engine for ``config`` now: raises :class:`ProviderMisconfigured` for ``baidu`` without keys.

    A ``language`` the local engine cannot read (Korean, Russian; Japanese on the tiny tier) goes to Baidu when
    its keys are configured, whatever ``engine`` says; without keys the local engine is returned, and the
    handler answers that it cannot read that script.
    """
    client = core_choose_engine(services, config["engine"], "plugins.ocr.engine", needs="ocr")
    if client is None:
        local = local_engine(config["threads"], config["max_side"], model=config["model"])
        if local.reads(language):
            return local
        client = core_choose_engine(services, "auto", "plugins.ocr.engine", needs="ocr")
        if client is None:
            return local
    return BaiduEngine(client, config["api"], config["language_type"], detect_direction=config["detect_direction"])


# ---------------------------------------------------------------------------------------------- handler
@dataclass
class Options:
    """What ``/ocr`` was asked for: a language (friendly code) and whether to outline the lines."""

    language: str | None = None
    boxes: bool = False
    bad_arg: str | None = None


def parse_args(args: list[str]) -> Options:
    """``/ocr [language] [boxes]`` in any order; the first word not understood is kept in ``bad_arg``."""
    options = Options()
    for arg in args:
        language = parse_language(arg)
        if arg.lower() in BOXES_ARGS:
            options.boxes = True
        elif language is not None and options.language is None:
            options.language = language
        else:
            options.bad_arg = arg
            break
    return options


async def read_page(
    ctx: Context, engine: LocalEngine | BaiduEngine, data: bytes, language: str | None, boxes: bool
) -> PageResult:
    """One image read by ``engine`` in worker threads (raises :class:`UserFacingError` subclasses)."""
    if isinstance(engine, LocalEngine):
        return await ctx.run_cpu(read_local, engine, data, boxes, language)
    prepared = await ctx.run_cpu(prepare_for_baidu, data)
    reading = await ctx.run_blocking(engine.read, prepared.data, language, boxes)
    return await ctx.run_cpu(finish, reading, prepared, boxes)


async def handle(ctx: Context) -> None:
    """``/ocr``: read every photo, then answer with the text (or a file), and outlined photos if asked."""
    options = parse_args(ctx.args)
    if options.bad_arg is not None:
        await ctx.reply(ctx.t("ocr.usage", arg=options.bad_arg, languages=", ".join(LANGUAGES)))
        return
    if not ctx.photos:  # the router delivers photos; be safe if a transport ever calls without
        await ctx.expect_photo()
        await ctx.reply(ctx.t("ocr.ocr.prompt"))
        return
    engine = choose_engine(ctx.config, ctx.services, options.language)
    if isinstance(engine, LocalEngine) and local_language_note(options.language, engine.model):
        # a script the local models cannot read, and no Baidu keys: say so rather than answer with garbage
        language = ctx.t(f"ocr.lang.{options.language}")
        reads = ", ".join(ctx.t(f"ocr.lang.{code}") for code in LOCAL_LANGUAGES[engine.model])
        await ctx.reply(ctx.t("ocr.local_unsupported", language=language, reads=reads))
        log.info("/ocr for user %s: %s asked, the local engine cannot read it", ctx.user.id, options.language)
        return
    boxes = options.boxes and ctx.config["annotate"]
    notes: list[str] = []
    if options.boxes and not ctx.config["annotate"]:
        notes.append(ctx.t("ocr.boxes_off"))

    started = time.perf_counter()
    sections: list[str] = []
    pictures: list[Reply] = []
    album = len(ctx.photos) > 1
    lines = chars = failed = 0
    stop: UserFacingError | None = None  # a STOP_ERRORS error: images from ``stopped_at`` on were not read
    stopped_at = 0

    async def read_rendered(image: Image.Image) -> PageResult:  # a PDF page without a text layer
        if isinstance(engine, LocalEngine):
            return await ctx.run_cpu(read_image, engine, image, False, False, options.language)
        return await read_page(ctx, engine, await ctx.run_cpu(to_png, image), options.language, False)

    for number, photo in enumerate(ctx.photos, 1):
        head = [ctx.t("ocr.image_label", n=number) + ":"] if album else []
        try:
            data = await photo.read()
            if is_pdf(data):
                text, pdf_lines = await read_pdf(ctx, data, read_rendered, ctx.config["max_side"])
                sections.append("\n".join([*head, text]))
                lines, chars = lines + pdf_lines, chars + len(text)
                continue
            page = await read_page(ctx, engine, data, options.language, boxes)
        except STOP_ERRORS as err:
            stop, stopped_at = err, number  # the next images would fail the same way
            if number > 1:
                sections.append(ctx.t("ocr.stopped", n=number, total=len(ctx.photos)))
            break
        except UserFacingError as err:
            failed += 1
            log.warning("/ocr image %d for user %s: %s: %s", number, ctx.user.id, type(err).__name__, err.detail)
            sections.append("\n".join([*head, ctx.t(err.key, **err.params)]))
            continue
        if page.animated:
            head.append(ctx.t("ocr.animated"))
        head += [ctx.t(key, **params) for key, params in page.notes]
        sections.append("\n".join([*head, page.text or ctx.t("ocr.no_text")]))
        lines += len(page.lines)
        chars += len(page.text)
        if page.annotated is not None:
            caption = ctx.t("ocr.boxes_caption_n", n=number) if album else ctx.t("ocr.boxes_caption")
            pictures.append(Reply(caption, photo=page.annotated))
    log.info(
        "/ocr for user %s: %d image(s), %d unreadable, %d lines, %d characters, engine %s, %.2f s%s",
        ctx.user.id,
        len(ctx.photos),
        failed,
        lines,
        chars,
        engine.describe(),
        time.perf_counter() - started,
        f"; stopped at image {stopped_at}: {type(stop).__name__}" if stop is not None else "",
    )
    if stop is not None and not sections:
        raise stop  # nothing was read: the router's answer is the whole answer
    text = "\n\n".join([*notes, *sections])
    if len(text) <= MAX_MESSAGE:
        await ctx.reply(text)
    else:
        document = Document(ctx.t("ocr.long_text_file"), text.encode("utf-8"), "text/plain; charset=utf-8")
        await ctx.reply(Reply(ctx.t("ocr.long_text", chars=len(text)), document=document))
    for picture in pictures:
        await ctx.reply(picture)
    if stop is not None:
        raise stop
