"""Decode, validate and normalise images, in memory, to a provider's limits.

:func:`prepare` turns the bytes a user sent into bytes a provider accepts; :func:`open_image` does the
checking half only, for local engines that resize themselves. Both raise :class:`core.contract.errors.BadImage`
with a specific catalogue key before any network call:

==========================  ===============================================================
``error.image_not_image``   the bytes are not an image Pillow can identify
``error.image_format``      an image, but not a format we accept (see :data:`ACCEPTED_FORMATS`)
``error.image_truncated``   the file is cut short or its data is damaged
``error.image_too_large``   more than :data:`MAX_PIXELS` pixels (decompression bomb), or it cannot be
                            brought under the byte limit
``error.image_too_small``   the shortest side is under ``Limits.min_side`` pixels
``error.image_too_narrow``  so long and thin that fitting the longest side leaves the shortest
                            under ``Limits.min_side`` pixels
==========================  ===============================================================

What happens to a usable image: the format is detected from the bytes (never a file name); the first
frame of an animation is used (``PreparedImage.animated`` says so); EXIF orientation is applied;
transparency is flattened onto a background that contrasts with the content (white under dark text,
black under light text: :func:`flatten_background`) and the result is RGB; it is downscaled (never
upscaled) to fit the limits, a huge image already while decoding (JPEG draft, whole-factor reduce); and
:func:`prepare` re-encodes it, which also drops metadata such as GPS positions before the image leaves the
bot (:func:`load` skips that step for local engines). Encoding: PNG when the source is
lossless (PNG, BMP, GIF, TIFF, lossless WebP — screenshots and text keep sharp edges) and the PNG fits
the byte limit, else JPEG (quality 90, then lower, then smaller dimensions until it fits). Nothing is
written to disk.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

from PIL import Image, ImageChops, ImageFile, ImageOps, ImageStat, UnidentifiedImageError

from core.contract.errors import BadImage

log = logging.getLogger(__name__)

#: File-name suffixes of images, for transports deciding whether a file looks like an image. The bytes decide
#: in the end (:func:`prepare`); a name only spares a download of what is plainly not one.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".heic", ".heif")
#: Documents that transports pass on like images (a ``core.contract.chat.Photo`` with its ``mime_type``): a plugin that
#: reads them (``/ocr`` reads PDFs) looks at the bytes; for the others they are simply "not an image".
DOCUMENT_SUFFIXES = (".pdf",)
DOCUMENT_MIME_TYPES = ("application/pdf",)


def is_document(file_name: str | None, mime_type: str | None) -> bool:
    """Whether a file, by its name or MIME type, is one of the documents of :data:`DOCUMENT_SUFFIXES`."""
    return mime_type in DOCUMENT_MIME_TYPES or (file_name or "").lower().endswith(DOCUMENT_SUFFIXES)


#: Input formats we decode (Pillow's names). Anything else Pillow knows is refused as ``error.image_format``.
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG includes MPO (multi-picture JPEG)
#: Largest decoded size in pixels; above it the image is refused before decoding (Pillow warns at ~89 M).
MAX_PIXELS = 80_000_000
#: Formats whose pixels are exact: re-encode them as PNG when that fits.
_LOSSLESS = ("PNG", "BMP", "GIF", "TIFF")
_JPEG_QUALITIES = (90, 80, 70, 60)
_MIN_SIDE = 15


@dataclass(frozen=True)
class Limits:
    """What a provider accepts: longest side, optional width/height box, encoded size, shortest side."""

    max_side: int
    max_bytes: int
    max_width: int | None = None
    max_height: int | None = None
    min_side: int = _MIN_SIDE


#: Baidu OCR: longest side ≤ 4096 px and the image ≤ 4 MB *after* base64 (the older, stricter wording of the
#: limit), so ≤ 3 MiB of raw bytes (base64 grows by 4/3).
OCR_LIMITS = Limits(max_side=4096, max_bytes=3 * 1024 * 1024)
#: Baidu face: within 1920×1080 and base64 ≤ 2 MB per image, so ≤ 1.5 MB of raw bytes (base64 grows by 4/3).
FACE_LIMITS = Limits(max_side=1920, max_width=1920, max_height=1080, max_bytes=2_000_000 * 3 // 4)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: ``data`` in ``format`` (``JPEG`` or ``PNG``), and the RGB ``image`` it encodes.

    ``width``/``height`` are those of ``image`` (after orientation and downscale); ``animated`` is true
    when the input had several frames (only the first is used); ``original_format`` is the input's
    format as detected from its bytes. ``data`` and ``image`` are left out of ``repr``.
    """

    data: bytes = field(repr=False)
    format: str
    image: Image.Image = field(repr=False)
    width: int
    height: int
    animated: bool
    original_format: str


def _bad(key: str, detail: str, **params: object) -> BadImage:
    return BadImage(detail, key=key, **params)


def _decode(
    data: bytes, min_side: int, draft_side: int | None = None
) -> tuple[Image.Image, str, bool, bool, tuple[int, int]]:
    """``(rgb image, original format, animated, lossless, stored size)``: validated, first frame, oriented, RGB.

    ``draft_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay at least
    this long (cheap for huge photos that will be downscaled anyway).
    """
    if not data:
        raise _bad("error.image_not_image", "empty file")
    Image.init()  # register every plugin, so that ``formats`` below can name WEBP and TIFF (idempotent)
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _bad("error.image_too_large", f"decompression bomb refused by Pillow: {exc}") from None
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _bad("error.image_truncated", f"cannot read the image header: {exc}") from None
    fmt = im.format or "unknown"
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise _bad(
            "error.image_too_large",
            f"{fmt} {width}x{height} has more than {MAX_PIXELS} pixels",
            width=width,
            height=height,
        )
    if min(width, height) < min_side:
        raise _bad(
            "error.image_too_small", f"{fmt} {width}x{height} is under {min_side} px", width=width, height=height
        )
    animated = bool(getattr(im, "is_animated", False)) and getattr(im, "n_frames", 1) > 1
    lossless = fmt in _LOSSLESS or (fmt == "WEBP" and im.info.get("lossless", False))
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow globally: a truncated file would pass silently
        log.debug("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images may not be detected")
    try:
        if animated:
            im.seek(0)
        if draft_side and fmt in ("JPEG", "MPO"):
            im.draft(None, (draft_side, draft_side))
        im.load()
        im = _reduce(im, draft_side, min_side)
        im = ImageOps.exif_transpose(im) or im
        rgb = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise _bad("error.image_too_large", f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _bad("error.image_truncated", f"{fmt} {width}x{height} cannot be decoded: {exc}") from None
    return rgb, fmt, animated, bool(lossless), (width, height)


#: Modes :meth:`PIL.Image.Image.reduce` works on (``1`` is reduced as ``L``; palette images are left alone).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "1")


def _reduce(im: Image.Image, draft_side: int | None, min_side: int) -> Image.Image:
    """``im`` shrunk by a whole factor (box filter, in its own mode, before it becomes RGB) when it is at least
    twice as large as ``draft_side`` on its longest side: a huge PNG costs the memory of its decoded pixels once,
    not again for every conversion. The longest side stays at least ``draft_side``. Images that would end up too
    narrow are left alone, so the error names their real size."""
    if not draft_side or im.mode not in _REDUCIBLE:
        return im
    longest, shortest = max(im.size), min(im.size)
    factor = longest // draft_side
    if factor < 2 or shortest * draft_side / longest < 4 * min_side:
        return im
    source = im.convert("L") if im.mode == "1" else im
    reduced = source.reduce(factor)
    reduced.info = dict(im.info)
    exif = im.getexif()
    if exif:
        reduced.info["exif"] = exif.tobytes()
    log.debug("decoded %dx%d %s reduced by %d", im.width, im.height, im.mode, factor)
    return reduced


def _unidentified(data: bytes) -> BadImage:
    """Tell "an image in a format we refuse" from "not an image at all"."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return _bad("error.image_format", f"unsupported image format {other.format}", format=other.format)
    except Exception:  # anything Pillow cannot identify is simply not an image
        return _bad("error.image_not_image", f"not an image ({len(data)} bytes)")


#: Opaque content brighter than this (alpha-weighted mean luminance, 0..255) is flattened onto black.
LIGHT_CONTENT = 140


def flatten_background(rgba: Image.Image) -> tuple[int, int, int]:
    """The background that contrasts with the opaque content of ``rgba``: black under light content, else white.

    Decided from the alpha-weighted mean brightness of the pixels (measured on a reduced copy of a large
    image): white text on a transparent PNG becomes white on black, dark text stays dark on white.
    """
    sample = rgba
    factor = max(1, min(rgba.size) // 256)
    if factor > 1:
        sample = rgba.reduce(factor)
    alpha = sample.getchannel("A")
    weight = sum(ImageStat.Stat(alpha).sum)
    if weight <= 0:
        return (255, 255, 255)
    weighted = ImageChops.multiply(sample.convert("L"), alpha)  # luminance × alpha / 255
    brightness = sum(ImageStat.Stat(weighted).sum) / weight * 255
    return (0, 0, 0) if brightness > LIGHT_CONTENT else (255, 255, 255)


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with transparency flattened onto a contrasting background and 16/32-bit greys scaled to 8 bits."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif im.mode == "F":
        im = im.convert("L")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        del im
        background = Image.new("RGB", rgba.size, flatten_background(rgba))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")


def _fit(width: int, height: int, limits: Limits) -> float:
    """The scale (≤ 1) that brings ``width``×``height`` within the limits."""
    scale = min(1.0, limits.max_side / max(width, height))
    if limits.max_width:
        scale = min(scale, limits.max_width / width)
    if limits.max_height:
        scale = min(scale, limits.max_height / height)
    return scale


def _resize(im: Image.Image, scale: float, limits: Limits) -> Image.Image:
    if scale >= 1.0:
        return im
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    if min(size) < limits.min_side:
        raise _bad(
            "error.image_too_narrow",
            f"{im.width}x{im.height} would be {size[0]}x{size[1]} within the limits, under {limits.min_side} px",
            width=im.width,
            height=im.height,
        )
    return im.resize(size, Image.Resampling.LANCZOS)


def _encode(im: Image.Image, fmt: str, quality: int = 90) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        im.save(out, "PNG", compress_level=6)
    else:
        im.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def open_image(data: bytes) -> Image.Image:
    """The image in ``data`` validated, EXIF-oriented, RGB, first frame; :class:`BadImage` if unusable.

    For local engines that resize themselves: no downscale, only the checks (minimum side 15 px).
    """
    return _decode(data, _MIN_SIDE)[0]


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image for a local engine: RGB ``image`` within the limits, not re-encoded.

    ``animated``: the input had several frames (the first is used); ``original_size``: its size as stored
    (before EXIF orientation and downscale).
    """

    image: Image.Image = field(repr=False)
    animated: bool
    original_size: tuple[int, int]


def load(data: bytes, limits: Limits) -> LoadedImage:
    """``data`` checked, oriented, RGB and downscaled to ``limits`` like :func:`prepare`, without re-encoding.

    For local engines: large images are decoded reduced (JPEG draft, whole-factor reduce) so that only the
    decoded file and the reduced copy are ever in memory. Raises :class:`BadImage` like :func:`prepare`.
    """
    im, _fmt, animated, _lossless, original = _decode(data, limits.min_side, draft_side=limits.max_side)
    return LoadedImage(_resize(im, _fit(im.width, im.height, limits), limits), animated, original)


def prepare(data: bytes, limits: Limits) -> PreparedImage:
    """``data`` checked and normalised to ``limits``: oriented, RGB, downscaled, re-encoded (see module doc).

    Raises :class:`BadImage` (keys in the module docstring) before anything is sent anywhere.
    """
    im, fmt, animated, lossless, _original = _decode(data, limits.min_side, draft_side=limits.max_side)
    im = _resize(im, _fit(im.width, im.height, limits), limits)
    encoded: bytes | None = None
    out_format = "JPEG"
    if lossless:
        png = _encode(im, "PNG")
        if len(png) <= limits.max_bytes:
            encoded, out_format = png, "PNG"
    while encoded is None:
        for quality in _JPEG_QUALITIES:
            jpeg = _encode(im, "JPEG", quality)
            if len(jpeg) <= limits.max_bytes:
                encoded = jpeg
                break
        else:
            if min(im.size) * 0.75 < limits.min_side:
                raise _bad(
                    "error.image_too_large",
                    f"cannot bring {im.width}x{im.height} under {limits.max_bytes} bytes",
                    width=im.width,
                    height=im.height,
                )
            im = _resize(im, 0.75, limits)
    log.debug(
        "prepared %s %s -> %s %dx%d, %d bytes%s",
        fmt,
        len(data),
        out_format,
        im.width,
        im.height,
        len(encoded),
        " (first frame of an animation)" if animated else "",
    )
    return PreparedImage(
        data=encoded,
        format=out_format,
        image=im,
        width=im.width,
        height=im.height,
        animated=animated,
        original_format=fmt,
    )
