"""OCR plugin pieces that need no model: arguments, languages, space restoration, sizing, config schema."""

from __future__ import annotations

import pytest

from core.runtime.config import ConfigError, check_section
from plugins.ocr import Options, config_schema, parse_args
from plugins.ocr.engines import LANGUAGES, LocalEngine, local_language_note, parse_language
from plugins.ocr.layout import restore_spaces


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], Options()),
        (["en"], Options(language="en")),
        (["boxes"], Options(boxes=True)),
        (["ZH", "boxes"], Options(language="zh", boxes=True)),
        (["boxes", "JAP"], Options(language="ja", boxes=True)),
        (["en", "fr"], Options(language="en", bad_arg="fr")),
        (["please"], Options(bad_arg="please")),
    ],
)
def test_arguments(args, expected):
    assert parse_args(args) == expected


def test_every_friendly_language_maps_to_a_baidu_language_type():
    assert set(LANGUAGES) == {"en", "zh", "ja", "ko", "fr", "de", "es", "ru", "pt", "it"}
    for code, language_type in LANGUAGES.items():
        assert parse_language(code) == code
        assert parse_language(language_type) == code
    assert parse_language("CHN_ENG") == "zh"
    assert parse_language("xx") is None


def test_local_engine_language_notes():
    """PP-OCRv6 small reads zh en ja and the Latin languages exactly (no caveat); ko and ru it cannot read;
    the tiny tier has no kana, so Japanese is unsupported there."""
    for language in (None, "en", "zh", "ja", "fr", "de", "es", "pt", "it"):
        assert local_language_note(language) is None, language
    assert local_language_note("ru") == "ocr.local_unsupported"
    assert local_language_note("ko") == "ocr.local_unsupported"
    assert local_language_note("ja", "tiny") == "ocr.local_unsupported"
    assert local_language_note("fr", "tiny") is None


def test_restore_spaces_keeps_the_spaces_the_model_wrote():
    boxes, pieces = boxes_for([("Hello", 0, 60), ("World", 65, 60)])  # a 5 px gap: too narrow to add a space
    assert restore_spaces("Hello World", QUAD, boxes, pieces) == "Hello World"
    assert restore_spaces("HelloWorld", QUAD, boxes, pieces) == "HelloWorld"


def boxes_for(pieces: list[tuple[str, float, float]], height: float = 30):
    """RapidOCR-style word boxes: (piece, left, width) on one horizontal line."""
    boxes = [[[left, 0], [left + width, 0], [left + width, height], [left, height]] for _, left, width in pieces]
    return boxes, [piece for piece, _, _ in pieces]


QUAD = [[0, 0], [400, 0], [400, 30], [0, 30]]


def test_restore_spaces_splits_words_that_stand_apart():
    boxes, pieces = boxes_for([("H", 0, 15), ("i", 16, 8), ("Y", 45, 15), ("o", 61, 15), ("u", 77, 15)])
    assert restore_spaces("HiYou", QUAD, boxes, pieces) == "Hi You"


def test_restore_spaces_keeps_close_chinese_together_and_spaces_latin_after_chinese():
    boxes, pieces = boxes_for([("青", 0, 30), ("島", 40, 30), ("T", 85, 15), ("O", 100, 15)])
    # 青→島 gap 10 (a third of the height): no space in Chinese; 島→T gap 15 (half): a space.
    assert restore_spaces("青島TO", QUAD, boxes, pieces) == "青島 TO"


def test_restore_spaces_never_changes_anything_but_spaces():
    boxes, pieces = boxes_for([("a", 0, 10), ("b", 100, 10)])
    assert restore_spaces("xyz", QUAD, boxes, pieces) == "xyz"  # pieces do not spell the text
    assert restore_spaces("ab", QUAD, boxes[:1], pieces) == "ab"  # counts differ
    assert restore_spaces("a b", QUAD, *boxes_for([("a", 0, 10), (" ", 10, 5), ("b", 15, 10)])) == "a b"


def test_downscale_keeps_a_readable_shortest_side():
    engine = LocalEngine(max_side=2000)
    assert engine.scale_for(4000, 3000) == pytest.approx(0.5)
    assert engine.scale_for(800, 600) == 1.0  # never upscaled
    assert engine.scale_for(4096, 27) == 1.0  # thin strips are not shrunk below 32 px


def test_config_defaults_and_validation():
    schema = config_schema()
    section = check_section(schema, {}, "plugins.ocr")
    assert section == {
        "engine": "auto",
        "api": "general_basic",
        "language_type": "CHN_ENG",
        "detect_direction": False,
        "annotate": True,
        "threads": 0,
        "model": "small",
        "max_side": 2000,
        "max_photos": 10,
        "max_pdf_pages": 20,
    }
    with pytest.raises(ConfigError, match=r"plugins\.ocr\.engine: must be one of auto, baidu, local"):
        check_section(schema, {"engine": "tesseract"}, "plugins.ocr")
    with pytest.raises(ConfigError, match=r"plugins\.ocr\.api"):
        check_section(schema, {"api": "handwriting"}, "plugins.ocr")
