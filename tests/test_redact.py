"""No secret survives a log record."""

import logging

from core.infra.redact import RedactingFilter, redact, register_secret


def test_secret_shaped_fields_are_masked_in_urls_forms_and_json():
    text = (
        "POST https://aip.baidubce.com/rest/2.0/ocr/v1/general?access_token=24.abc.def "
        'client_id=AK1&client_secret=SK2 {"sign": "ABCDEF", "orderNo": "o1"}'
    )
    out = redact(text)
    assert "24.abc.def" not in out and "SK2" not in out and "ABCDEF" not in out and "AK1" not in out
    assert "access_token=***" in out and '"sign": "***"' in out and '"orderNo": "o1"' in out


def test_telegram_bot_tokens_are_masked():
    out = redact("GET https://api.telegram.org/bot123456789:AAEabcdefghijklmnopqrstuvwxyz012345/getMe")
    assert out == "GET https://api.telegram.org/bot***/getMe"


def test_registered_values_are_masked_anywhere():
    register_secret("plain-secret-1234")
    assert redact("oops plain-secret-1234 leaked") == "oops *** leaked"


def test_the_filter_masks_arguments_and_tracebacks(caplog):
    register_secret("tb-secret-5678")
    logger = logging.getLogger("test.redact")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise ValueError("failed with tb-secret-5678")
    except ValueError:
        logger.exception("call with %s", "access_token=xyz")
    assert "tb-secret-5678" not in caplog.text and "xyz" not in caplog.text
    assert "access_token=***" in caplog.text


def test_id_numbers_standing_alone_are_masked_but_longer_numbers_are_not():
    assert redact("name 张三 id 11010519491231002X ok") == "name 张三 id *** ok"
    assert redact("log_id 1234567890123456789012") == "log_id 1234567890123456789012"


def test_the_registry_of_secret_values_is_bounded_and_keeps_the_newest():
    from core.infra import redact as module

    for n in range(module.MAX_VALUES + 10):
        register_secret(f"bounded-secret-{n:05d}")
    assert len(module._values) == module.MAX_VALUES
    assert redact(f"x bounded-secret-{module.MAX_VALUES + 9:05d} y") == "x *** y"
