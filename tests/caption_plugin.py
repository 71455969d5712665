"""A fourth plugin, written only with the documented API: ``/caption`` takes a photo, asks for a caption,
and sends the photo back with the caption under it. Two steps in one file; a restart in between loses nothing."""

import io

from core.contract.chat import Command, Context
from core.contract.hookspecs import hookimpl
from core.infra.images import open_image


def thumbnail(data: bytes) -> bytes:
    """(worker thread) At most 512 px; a non-image, a truncated file or a decompression bomb is a BadImage."""
    image = open_image(data)
    image.thumbnail((512, 512))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG")
    return out.getvalue()


class Plugin:
    @hookimpl
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        return {
            "en": {"caption.help": "Put a caption under a photo", "caption.ask": "What should the caption say?"},
            "zh": {"caption.help": "给照片配上文字", "caption.ask": "要配什么文字？"},
        }

    @hookimpl
    def aipbot_commands(self) -> list[Command]:
        return [Command("caption", "caption.help", self.caption, takes_photos=True)]

    async def caption(self, ctx: Context) -> None:
        if ctx.step is None:  # step 1: the photo (with the command, or right after it)
            await ctx.run_cpu(thumbnail, await ctx.photos[0].read())  # refuse a bad image now, not later
            await ctx.expect_text("caption", keep=ctx.photos[:1])
            await ctx.reply(ctx.t("caption.ask"))
            return
        if not ctx.kept:  # step 2, but the photo is gone (it was sent as bytes before a restart)
            await ctx.reply(ctx.t("router.photo_expired"))
            return
        picture = await ctx.run_cpu(thumbnail, await ctx.kept[0].read())
        await ctx.reply(ctx.text, photo=picture)
