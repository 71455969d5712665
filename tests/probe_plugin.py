"""A plugin for router tests: one command per routing feature, each answering what it received."""

from core.contract.chat import Command, Context
from core.contract.errors import BadImage, ProviderMisconfigured
from core.contract.fields import Field
from core.contract.hookspecs import hookimpl


@hookimpl
def aipbot_config_schema():
    return {"greeting": Field(str, default="hi")}


@hookimpl
def aipbot_messages():
    return {
        "en": {
            "probe.echo": "Echo the arguments",
            "probe.snap": "Count photos",
            "probe.pair": "Take two photos",
            "probe.secret": "Admins only",
            "probe.ask": "Offer a button and a link",
            "probe.boom": "Fail",
            "probe.bad": "Refuse the image",
            "probe.pair.prompt": "Send the two photos.",
            "probe.name": "Ask for a name",
            "probe.broken": "Fail for want of settings",
        },
        "zh": {
            "probe.echo": "回显参数",
            "probe.snap": "数照片",
            "probe.pair": "收两张照片",
            "probe.secret": "仅管理员",
            "probe.ask": "给出按钮和链接",
            "probe.boom": "失败",
            "probe.bad": "拒绝图片",
            "probe.pair.prompt": "请发送两张照片。",
            "probe.name": "询问名字",
            "probe.broken": "因配置缺失而失败",
        },
    }


@hookimpl
def aipbot_commands(config):
    async def echo(ctx: Context) -> None:
        await ctx.reply(f"{config['greeting']} {' '.join(ctx.args)}".strip())

    async def snap(ctx: Context) -> None:
        sizes = [len(await p.read()) for p in ctx.photos]
        await ctx.reply(f"snap got {len(ctx.photos)} photos {sizes} args={ctx.args}")

    async def pair(ctx: Context) -> None:
        photos = ctx.kept + ctx.photos
        if len(photos) < 2:
            await ctx.expect_photo(keep=photos)
            await ctx.reply("pair got the first photo")
            return
        await ctx.reply(f"pair got {len(photos)} photos")

    async def name(ctx: Context) -> None:
        if ctx.step != "asked":
            await ctx.expect_text("asked")
            await ctx.reply("what is your name?")
            return
        deleted = await ctx.delete_message()
        await ctx.reply(f"hello {ctx.text} (message {ctx.message_id} deleted: {deleted})")

    async def secret(ctx: Context) -> None:
        await ctx.reply("the secret")

    async def ask(ctx: Context) -> None:
        await ctx.reply("choose", buttons=[[ctx.button("Yes", "yes")]])
        await ctx.reply(f"link {ctx.deep_link('abc-1')}")

    async def on_callback(ctx: Context, data: str) -> None:
        await ctx.reply(f"pressed {data} by {ctx.user.id}")

    async def on_deep_link(ctx: Context, payload: str) -> None:
        await ctx.reply(f"deep link {payload} for {ctx.user.id}")

    async def boom(ctx: Context) -> None:
        raise RuntimeError("kaboom access_token=SHOULD-NOT-LEAK")

    async def bad(ctx: Context) -> None:
        raise BadImage("test refuses the image")

    async def broken(ctx: Context) -> None:
        error = ProviderMisconfigured(f"Baidu error 6 (log_id {ctx.user.id}): enable the OCR API")
        error.code = 6
        raise error

    return [
        Command("echo", "probe.echo", echo),
        Command("snap", "probe.snap", snap, takes_photos=True, max_photos=3),
        Command("pair", "probe.pair", pair, takes_photos=True, max_photos=2),
        Command("secret", "probe.secret", secret, admin_only=True, on_deep_link=on_deep_link),
        Command("name", "probe.name", name),
        Command("ask", "probe.ask", ask, on_callback=on_callback, on_deep_link=on_deep_link),
        Command("boom", "probe.boom", boom),
        Command("bad", "probe.bad", bad),
        Command("broken", "probe.broken", broken),
    ]


@hookimpl
def aipbot_status(config):
    return f"greeting {config['greeting']}"
