from aipbot_imageinfo import Plugin

from core.contract.testing import assert_catalogue_complete, image, plugin_bot


async def test_imageinfo_tells_size_and_format_and_sends_a_thumbnail():
    async with plugin_bot("imageinfo", Plugin, units="KiB") as bot:
        [reply] = await bot.send("/imageinfo", photos=[image(640, 480, "PNG")])
    assert reply.text.startswith("640×480 PNG, ") and reply.text.endswith(" KiB")
    assert reply.photo is not None


def test_imageinfo_speaks_english_and_chinese():
    assert_catalogue_complete(Plugin)
