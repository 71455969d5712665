import io

from PIL import Image

from core.contract.chat import Command, Context
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl
from core.infra.images import open_image


def describe(data: bytes) -> tuple[dict, bytes]:
    """(worker thread) Size and format, and a thumbnail to send back."""
    image = open_image(data)  # a non-image, a truncated file or a decompression bomb raises BadImage
    with Image.open(io.BytesIO(data)) as original:
        info = {"width": original.width, "height": original.height, "format": original.format}
    image.thumbnail((256, 256))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return info, out.getvalue()


class Plugin:
    """One instance per bot: what it needs lives on ``self``."""

    @hookimpl
    def aipbot_config_schema(self):
        return {"units": Field(str, default="KB", choices=["KB", "KiB"], help="how file sizes are shown")}

    @hookimpl
    def aipbot_messages(self):
        return {
            "en": {
                "imageinfo.help": "Tell the size and format of a photo",
                "imageinfo.result": "{width}×{height} {format}, {size} {units}",
            },
            "zh": {
                "imageinfo.help": "查看照片的尺寸和格式",
                "imageinfo.result": "{width}×{height} {format}，{size} {units}",
            },
        }

    @hookimpl
    def aipbot_configure(self, config):
        self.units = config["units"]
        self.divisor = 1000 if self.units == "KB" else 1024

    @hookimpl
    def aipbot_commands(self):
        return [Command("imageinfo", "imageinfo.help", self.imageinfo, takes_photos=True, max_photos=10)]

    @hookimpl
    def aipbot_status(self):
        return f"sizes in {self.units}"

    async def imageinfo(self, ctx: Context) -> None:
        for photo in ctx.photos:
            data = await photo.read()
            info, thumbnail = await ctx.run_cpu(describe, data)  # a BadImage is told to the user by the router
            size = round(len(data) / self.divisor, 1)
            await ctx.reply(ctx.t("imageinfo.result", size=size, units=self.units, **info), photo=thumbnail)
