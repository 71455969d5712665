"""core.infra.images: validation, orientation, RGB, downscale and re-encoding, all in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.contract.errors import BadImage
from core.infra.images import FACE_LIMITS, MAX_PIXELS, OCR_LIMITS, Limits, PreparedImage, open_image, prepare
from tests.harness import assert_in_both_languages

DATA = Path(__file__).resolve().parents[1] / "examples"


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kwargs)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (a decompression bomb needs no more to be refused)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("not_an_image.jpg", "error.image_not_image"),
        ("truncated.jpg", "error.image_truncated"),
        ("tiny.png", "error.image_too_small"),
    ],
)
@pytest.mark.parametrize("limits", [OCR_LIMITS, FACE_LIMITS], ids=["ocr", "face"])
def test_bad_files_get_a_specific_key(name: str, key: str, limits: Limits) -> None:
    data = (DATA / "bad" / name).read_bytes()
    with pytest.raises(BadImage) as info:
        prepare(data, limits)
    assert info.value.key == key
    with pytest.raises(BadImage) as info2:
        open_image(data)
    assert info2.value.key == key


def test_every_image_key_has_text_in_both_languages() -> None:
    keys = [
        "error.image_not_image",
        "error.image_format",
        "error.image_truncated",
        "error.image_too_large",
        "error.image_too_small",
        "error.image_too_narrow",
    ]
    assert_in_both_languages(keys)
    err = BadImage("x", key="error.image_too_small", width=8, height=8)
    assert "8×8" in err.user_message("en") and "8×8" in err.user_message("zh")


def test_empty_and_random_bytes_are_not_images() -> None:
    for data in (b"", b"\x00" * 100, np.random.default_rng(1).bytes(5000), b"%PDF-1.4\n..."):
        with pytest.raises(BadImage) as info:
            prepare(data, OCR_LIMITS)
        assert info.value.key == "error.image_not_image"


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_known_but_unsupported_formats_are_refused_as_format(fmt: str) -> None:
    data = encode(Image.new("RGB", (32, 32), "red"), fmt)
    with pytest.raises(BadImage) as info:
        prepare(data, OCR_LIMITS)
    assert info.value.key == "error.image_format"


def test_format_comes_from_the_bytes() -> None:
    # PNG bytes are PNG whatever a file name says: prepare never sees a name, only bytes.
    png = (DATA / "text" / "en_line.png").read_bytes()
    assert prepare(png, OCR_LIMITS).original_format == "PNG"
    jpeg = (DATA / "text" / "receipt.jpg").read_bytes()
    assert prepare(jpeg, OCR_LIMITS).original_format == "JPEG"


def test_truncated_png_is_refused() -> None:
    data = encode(Image.effect_noise((200, 200), 40).convert("RGB"), "PNG")
    with pytest.raises(BadImage) as info:
        prepare(data[: len(data) // 2], OCR_LIMITS)
    assert info.value.key == "error.image_truncated"


@pytest.mark.parametrize("size", [(9000, 9000), (20000, 20000), (2_700_000, 30)])
def test_decompression_bombs_are_refused_from_the_header(size: tuple[int, int]) -> None:
    assert size[0] * size[1] > MAX_PIXELS
    with pytest.raises(BadImage) as info:
        prepare(png_header_only(*size), OCR_LIMITS)
    assert info.value.key == "error.image_too_large"


def test_very_wide_image_fits_ocr_but_is_too_narrow_for_face() -> None:
    data = (DATA / "bad" / "very_wide.png").read_bytes()
    prepared = prepare(data, OCR_LIMITS)
    assert (prepared.width, prepared.height) == (4096, 27)
    with pytest.raises(BadImage) as info:
        prepare(data, FACE_LIMITS)
    assert info.value.key == "error.image_too_narrow"


def test_animation_uses_the_first_frame_and_says_so() -> None:
    data = (DATA / "bad" / "animation.gif").read_bytes()
    prepared = prepare(data, OCR_LIMITS)
    assert prepared.animated and prepared.original_format == "GIF"
    with Image.open(io.BytesIO(data)) as gif:
        gif.seek(0)
        first = gif.convert("RGB")
    assert prepared.image.mode == "RGB"
    assert np.array_equal(np.asarray(prepared.image), np.asarray(first))
    assert not prepare((DATA / "text" / "en_line.png").read_bytes(), OCR_LIMITS).animated


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (80, 40), "white")
    im.paste((255, 0, 0), (0, 0, 40, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(im, "JPEG", exif=exif.tobytes(), quality=95)
    prepared = prepare(data, OCR_LIMITS)
    assert (prepared.width, prepared.height) == (40, 80)
    top = prepared.image.getpixel((20, 10))
    assert top[0] > 200 and top[1] < 60  # the red half is now on top
    assert open_image(data).size == (40, 80)


def test_metadata_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    data = encode(Image.new("RGB", (64, 64), "white"), "JPEG", exif=exif.tobytes())
    prepared = prepare(data, OCR_LIMITS)
    assert b"SecretCam" not in prepared.data


def test_transparency_is_flattened_onto_white() -> None:
    im = Image.new("RGBA", (60, 30), (0, 0, 0, 0))
    im.paste((0, 0, 0, 255), (10, 10, 20, 20))
    prepared = prepare(encode(im, "PNG"), OCR_LIMITS)
    assert prepared.image.mode == "RGB"
    assert prepared.image.getpixel((0, 0)) == (255, 255, 255)
    assert prepared.image.getpixel((15, 15)) == (0, 0, 0)
    assert prepared.format == "PNG"


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA"])
def test_other_modes_become_rgb(mode: str) -> None:
    im = Image.new("RGB", (40, 40), (200, 100, 50)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        im = Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    prepared = prepare(encode(im, fmt), OCR_LIMITS)
    assert prepared.image.mode == "RGB"
    if mode == "I;16":
        assert 150 <= prepared.image.getpixel((5, 5))[0] <= 160  # 40000 / 256, not clipped to white


def test_downscale_fits_the_box_and_keeps_the_aspect() -> None:
    big = Image.new("RGB", (5000, 2500), "white")
    ocr = prepare(encode(big, "JPEG"), OCR_LIMITS)
    assert (ocr.width, ocr.height) == (4096, 2048)
    face = prepare(encode(big, "JPEG"), FACE_LIMITS)
    assert (face.width, face.height) == (1920, 960)
    portrait = prepare(encode(Image.new("RGB", (1500, 3000), "white"), "JPEG"), FACE_LIMITS)
    assert (portrait.width, portrait.height) == (540, 1080)
    small = prepare(encode(Image.new("RGB", (300, 200), "white"), "JPEG"), FACE_LIMITS)
    assert (small.width, small.height) == (300, 200)  # never upscaled


def test_byte_limit_is_met_by_recompressing_and_shrinking() -> None:
    noise = Image.fromarray(np.random.default_rng(7).integers(0, 256, (600, 600, 3), dtype=np.uint8))
    data = encode(noise, "PNG")
    limits = Limits(max_side=4096, max_bytes=60_000)
    prepared = prepare(data, limits)
    assert len(prepared.data) <= 60_000
    assert prepared.format == "JPEG"  # the lossless PNG did not fit
    assert prepared.width < 600
    with Image.open(io.BytesIO(prepared.data)) as check:
        assert check.format == "JPEG" and check.size == (prepared.width, prepared.height)


def test_impossible_byte_limit_is_too_large() -> None:
    noise = Image.fromarray(np.random.default_rng(8).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    with pytest.raises(BadImage) as info:
        prepare(encode(noise, "PNG"), Limits(max_side=4096, max_bytes=200))
    assert info.value.key == "error.image_too_large"


def test_face_limit_keeps_base64_under_two_megabytes() -> None:
    assert FACE_LIMITS.max_bytes * 4 / 3 <= 2_000_000
    noise = Image.fromarray(np.random.default_rng(9).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    prepared = prepare(encode(noise, "PNG"), FACE_LIMITS)
    assert len(prepared.data) <= FACE_LIMITS.max_bytes


def test_lossless_sources_stay_png_and_photos_jpeg() -> None:
    assert prepare((DATA / "text" / "zh_notice.png").read_bytes(), OCR_LIMITS).format == "PNG"
    assert prepare((DATA / "faces" / "obama_1.jpg").read_bytes(), FACE_LIMITS).format == "JPEG"


def test_repr_leaves_out_the_bytes() -> None:
    prepared = prepare((DATA / "text" / "receipt.jpg").read_bytes(), OCR_LIMITS)
    assert isinstance(prepared, PreparedImage)
    text = repr(prepared)
    assert "data=" not in text and "image=" not in text and "width=403" in text


def test_open_image_is_rgb_first_frame_without_resizing() -> None:
    im = open_image((DATA / "bad" / "very_wide.png").read_bytes())
    assert im.mode == "RGB" and im.size == (9000, 60)
    assert open_image((DATA / "bad" / "animation.gif").read_bytes()).mode == "RGB"
