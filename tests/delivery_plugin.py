"""A plugin for delivery tests: commands whose answers are computed (and counted), so a test can tell the
real answer from an apology and see that nothing was computed twice."""

import io

from PIL import Image

from core.contract.chat import Command, Context
from core.contract.hookspecs import hookimpl

#: Every answer computed, in order (tests clear it).
COMPUTED: list[str] = []


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 255).save(out, "PNG", optimize=True)
    return out.getvalue()


@hookimpl
def aipbot_messages():
    help_texts = {
        "calc.square": "Square a number",
        "calc.table": "A long table of squares",
        "calc.wide": "A very wide picture",
        "calc.pic": "A small picture with a caption",
        "calc.status": "A status line, then the answer in its place",
    }
    return {"en": help_texts, "zh": help_texts}


@hookimpl
def aipbot_commands(config):
    async def square(ctx: Context) -> None:
        n = int(ctx.args[0]) if ctx.args else 7
        answer = f"{n}² = {n * n}"
        COMPUTED.append(answer)
        await ctx.reply(answer)

    async def table(ctx: Context) -> None:
        rows = int(ctx.args[0]) if ctx.args else 300
        answer = "\n".join(f"{i:5d}² = {i * i:12d} " + "." * 20 for i in range(rows))
        COMPUTED.append(answer)
        await ctx.reply(answer)

    async def wide(ctx: Context) -> None:
        width, height = (int(a) for a in ctx.args[:2]) if len(ctx.args) >= 2 else (10000, 500)
        COMPUTED.append(f"wide {width}x{height}")
        await ctx.reply(photo=png(width, height), text=f"{width}x{height}")

    async def pic(ctx: Context) -> None:
        COMPUTED.append("pic")
        await ctx.reply(photo=png(64, 48), text="a small picture")

    async def status(ctx: Context) -> None:
        message_id = await ctx.reply("working…")
        answer = "done: 42"
        COMPUTED.append(answer)
        assert message_id is not None
        await ctx.edit(message_id, answer)

    return [
        Command("square", "calc.square", square),
        Command("table", "calc.table", table),
        Command("wide", "calc.wide", wide),
        Command("pic", "calc.pic", pic),
        Command("status", "calc.status", status),
    ]
