"""``/rotate``: a photo, then a button saying which way to turn it. The second step is a button press (written
only with the documented API: ``ctx.expect_choice``); the README's plugin guide shows this file."""

import io

from core.contract.chat import Command, Context
from core.contract.hookspecs import hookimpl
from core.infra.images import open_image

TURNS = {"left": 90, "right": 270, "over": 180}  # degrees counter-clockwise


def turned(data: bytes, degrees: int) -> bytes:
    """(worker thread) The photo turned by ``degrees``, as a JPEG; a non-image is a BadImage."""
    out = io.BytesIO()
    open_image(data).rotate(degrees, expand=True).convert("RGB").save(out, "JPEG")
    return out.getvalue()


class Plugin:
    @hookimpl
    def aipbot_messages(self) -> dict[str, dict[str, str]]:
        return {
            "en": {"rotate.help": "Turn a photo", "rotate.ask": "Which way?", "rotate.left": "↺ Left",
                   "rotate.right": "↻ Right", "rotate.over": "Upside down"},
            "zh": {"rotate.help": "旋转照片", "rotate.ask": "往哪边转？", "rotate.left": "↺ 向左",
                   "rotate.right": "↻ 向右", "rotate.over": "倒过来"},
        }  # fmt: skip

    @hookimpl
    def aipbot_commands(self) -> list[Command]:
        return [Command("rotate", "rotate.help", self.rotate, takes_photos=True)]

    async def rotate(self, ctx: Context) -> None:
        if ctx.step is None:  # step 1: the photo; check it now, then ask with one button per way
            await ctx.run_cpu(open_image, await ctx.photos[0].read())
            buttons = [[ctx.button(ctx.t(f"rotate.{way}"), way) for way in TURNS]]
            await ctx.reply(ctx.t("rotate.ask"), buttons=await ctx.expect_choice("way", buttons, keep=ctx.photos))
            return
        if not ctx.kept:  # step 2, but the photo is gone (it was sent as bytes before a restart)
            await ctx.reply(ctx.t("router.photo_expired"))
            return
        picture = await ctx.run_cpu(turned, await ctx.kept[0].read(), TURNS[ctx.choice])  # step 2: the button
        await ctx.reply(photo=picture)
