"""Example aipbot plugin: ``/imageinfo`` answers with a photo's size and format.

Install it next to the bot (``pip install ./tests/example_plugin``) and enable it in config.yaml:

    plugins:
      imageinfo: {units: KiB}
"""

import io

from PIL import Image

from core.chat import Command, Context
from core.config import Field
from core.hookspecs import hookimpl


@hookimpl
def aipbot_config_schema():
    return {"units": Field(str, default="KB", choices=["KB", "KiB"], help="how file sizes are shown")}


@hookimpl
def aipbot_messages():
    return {
        "en": {
            "imageinfo.help": "Tell the size and format of a photo",
            "imageinfo.result": "{width}×{height} {format}, {size} {units}",
            "imageinfo.not_image": "That is not an image I can read.",
        },
        "zh": {
            "imageinfo.help": "查看照片的尺寸和格式",
            "imageinfo.result": "{width}×{height} {format}，{size} {units}",
            "imageinfo.not_image": "这不是我能读取的图片。",
        },
    }


@hookimpl
def aipbot_commands(config):
    divisor = 1000 if config["units"] == "KB" else 1024

    def describe(data: bytes) -> dict:
        with Image.open(io.BytesIO(data)) as image:
            return {"width": image.width, "height": image.height, "format": image.format}

    async def imageinfo(ctx: Context) -> None:
        for photo in ctx.photos:
            data = await photo.read()
            try:
                info = await ctx.run_cpu(describe, data)
            except OSError:
                await ctx.reply(ctx.t("imageinfo.not_image"))
                continue
            size = round(len(data) / divisor, 1)
            await ctx.reply(ctx.t("imageinfo.result", size=size, units=config["units"], **info))

    return [Command("imageinfo", "imageinfo.help", imageinfo, takes_photos=True, max_photos=10)]


@hookimpl
def aipbot_status(config):
    return f"sizes in {config['units']}"
