"""Benchmark: delivery against the fake Bot API, with faults injected and with Telegram-like flood control.

1. **Faults.** For each fault kind, N users (40) ask ``/square n`` at once while the next N ``sendMessage``
   calls are scripted to fail (``two 429s``: the next 2N). Each user ends up *answered* (the computed answer
   arrived once), *answered twice*, *apology only* ("Sorry, something went wrong"), or *lost* (nothing
   within the time limit). Run with the configured delivery (``send_retries: 5``) and, for contrast, with
   ``send_retries: 0`` (no retries; the adaptations of 400s still apply).
2. **Send rate.** 20 users × 10 ``/square`` commands queued at once, the fake's ``limit_rate()`` on
   (1 message/s per chat with bursts of 3, 30/s overall with bursts of 30): the 429s drawn (target 0) and
   throughput as a ratio of Telegram's limit (target ≥ 0.9): the fastest time the fake's buckets allow for
   these 200 messages divided by the time from the first to the last accepted reply. For contrast, the
   same with the bot's rate limits switched off (429s then retried after their retry_after), and with
   python-telegram-bot's ``AIORateLimiter(max_retries=20)`` in place of ours (needs ``aiolimiter``).

Run::

    .venv/bin/python bench/delivery_bench.py [--users 40] [--chats 20] [--per-chat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.runtime.app import App  # noqa: E402
from core.runtime.config import validate  # noqa: E402
from core.runtime.roles import TelegramProcess  # noqa: E402
from tests import delivery_plugin  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.harness import merge  # noqa: E402

APOLOGY = "Sorry, something went wrong"
#: (label, fail() arguments, how many faults per user)
FAULTS: list[tuple[str, dict[str, Any], int]] = [
    ("429 retry_after=2", {"kind": "429", "retry_after": 2}, 1),
    ("two 429s in a row", {"kind": "429", "retry_after": 1}, 2),
    ("502 (nginx page)", {"kind": "5xx", "status": 502}, 1),
    ("dropped connection", {"kind": "drop"}, 1),
    ("stall (timeout)", {"kind": "stall", "delay": 3.0}, 1),
    ("400 message is too long", {"kind": "400", "description": "message is too long"}, 1),
    ("400 can't parse entities", {"kind": "400", "description": "can't parse entities: Unsupported start tag"}, 1),
]


def bot_config(fake: FakeTelegram, **telegram: Any) -> dict[str, Any]:
    base = {
        **fake.config(request_timeout=1.0),
        "storage": {"path": ":memory:"},
        "plugins": {"calc": {}},
    }
    return validate(merge(base, {"telegram": telegram}))


async def run_bot(fake: FakeTelegram, **telegram: Any) -> TelegramProcess:
    transport = TelegramProcess(App(bot_config(fake, **telegram), {"calc": delivery_plugin}))
    await transport.start()
    return transport


@dataclass
class Tally:
    answered: int = 0
    twice: int = 0
    apology: int = 0
    lost: int = 0
    seconds: float = 0.0


def outcome(fake: FakeTelegram, user: int, answer: str) -> str | None:
    """What user ``user`` got so far: ``answered``, ``twice``, ``apology``, or None (nothing yet)."""
    got = [c for c in list(fake.calls) if c.ok and c.chat_id == user and c.method in ("sendMessage", "sendDocument")]
    real = [c for c in got if c.text == answer or (c.file and c.file[1] == answer.encode())]
    if len(real) > 1:
        return "twice"
    if real:
        return "answered"
    if any((c.text or "").startswith(APOLOGY) for c in got):
        return "apology"
    return None


async def fault_run(label: str, args: dict[str, Any], per_user: int, users: int, retries: int) -> Tally:
    with FakeTelegram() as fake:
        transport = await run_bot(fake, send_retries=retries)
        try:
            fake.fail("sendMessage", users * per_user, **args)
            started = time.monotonic()
            ids = list(range(2001, 2001 + users))
            answers = {}
            for n, user in enumerate(ids, start=1):
                answers[user] = f"{n}² = {n * n}"
                fake.user_sends_text(f"/square {n}", user_id=user)
            deadline = started + 40
            while time.monotonic() < deadline:
                done = [outcome(fake, u, answers[u]) for u in ids]
                if all(done):
                    await asyncio.sleep(1.0)  # let a late duplicate show
                    break
                await asyncio.sleep(0.1)
            tally = Tally(seconds=time.monotonic() - started)
            for user in ids:
                result = outcome(fake, user, answers[user])
                if result == "answered":
                    tally.answered += 1
                elif result == "twice":
                    tally.twice += 1
                elif result == "apology":
                    tally.apology += 1
                else:
                    tally.lost += 1
            return tally
        finally:
            await transport.stop()


def fastest(chats: int, per_chat: int, rate: float, burst: int, overall: float, overall_burst: int) -> float:
    """The shortest time in which token buckets like the fake's let ``chats × per_chat`` messages through."""
    total = chats * per_chat

    def capacity(t: float) -> float:
        return min(chats * min(per_chat, burst + rate * t), overall_burst + overall * t)

    low, high = 0.0, total / min(rate * chats, overall) + 1
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if capacity(mid) < total else (low, mid)
    return high


async def rate_run(chats: int, per_chat: int, limits: str) -> dict[str, float]:
    """``limits``: ``ours`` (core.sending.pacer), ``off`` (rates off), ``ptb`` (PTB's AIORateLimiter)."""
    with FakeTelegram() as fake:
        off = {} if limits != "off" else {"rate_overall": 0, "rate_per_chat": 0, "rate_per_group": 0}
        if limits == "ptb":
            from telegram.ext import AIORateLimiter

            from core.runtime import app as transport_module

            saved = transport_module.SendLimiter.from_config
            transport_module.SendLimiter.from_config = lambda config, **_: AIORateLimiter(max_retries=20)  # type: ignore
            try:
                transport = await run_bot(fake)
            finally:
                transport_module.SendLimiter.from_config = saved  # type: ignore[method-assign]
        else:
            transport = await run_bot(fake, send_retries=20, **off)
        try:
            fake.limit_rate()  # Telegram-like: 1/s per chat (bursts of 3), 30/s overall (bursts of 30)
            total = chats * per_chat
            for round_ in range(per_chat):
                for chat in range(chats):
                    fake.user_sends_text(f"/square {round_ * chats + chat}", user_id=3001 + chat)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                accepted = [c for c in fake.calls_of("sendMessage") if c.ok]
                if len(accepted) >= total:
                    break
                await asyncio.sleep(0.05)
            calls = fake.calls_of("sendMessage")
            accepted = sorted(c.at for c in calls if c.ok)
            elapsed = accepted[-1] - accepted[0] if len(accepted) > 1 else float("nan")
            ideal = fastest(chats, per_chat, 1.0, 3, 30.0, 30)
            return {
                "accepted": len(accepted),
                "total": total,
                "429s": sum(1 for c in calls if c.fault == "rate"),
                "seconds": elapsed,
                "ideal": ideal,
                "ratio": ideal / elapsed,
                "per_second": (len(accepted) - 1) / elapsed,
            }
        finally:
            await transport.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=40, help="faults (users) per fault kind")
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--per-chat", type=int, default=10)
    parser.add_argument("--skip-baseline", action="store_true", help="no runs with retries or limits off")
    parser.add_argument("--only", choices=["faults", "rate"], help="run one part only")
    parser.add_argument("--rate-runs", type=int, default=1, help="repeat the send-rate run (limits on)")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # retries and give-ups log at INFO/WARNING: not here

    if opts.only != "rate":
        await faults_part(opts)
    if opts.only != "faults":
        await rate_part(opts)


async def faults_part(opts: argparse.Namespace) -> None:
    print(f"1. Faults on sendMessage: {opts.users} users per kind, each answer hit by the fault")
    print(f"{'fault':26} {'retries':>7} {'answered':>9} {'twice':>6} {'apology':>8} {'lost':>5} {'seconds':>8}")
    for label, args, per_user in FAULTS:
        for retries in (5,) if opts.skip_baseline else (5, 0):
            t = await fault_run(label, args, per_user, opts.users, retries)
            print(
                f"{label:26} {retries:>7} {t.answered:>9} {t.twice:>6} {t.apology:>8} {t.lost:>5} {t.seconds:>8.1f}",
                flush=True,
            )


async def rate_part(opts: argparse.Namespace) -> None:
    print(f"\n2. Send rate: {opts.chats} chats × {opts.per_chat} replies, the fake's limit_rate() on")
    runs = ["ours"] * opts.rate_runs + ([] if opts.skip_baseline else ["off", "ptb"])
    labels = {
        "ours": "core.sending.pacer                   ",
        "off": "core.sending.pacer, rates off        ",
        "ptb": "PTB AIORateLimiter(retries=20)",
    }
    for limits in runs:
        try:
            r = await rate_run(opts.chats, opts.per_chat, limits)
        except RuntimeError as err:  # AIORateLimiter without aiolimiter installed
            print(f"{labels[limits]}: not run ({err})")
            continue
        print(
            f"{labels[limits]}: {r['accepted']}/{r['total']} delivered, "
            f"{r['429s']} 429s drawn, {r['seconds']:.2f} s first to last ({r['per_second']:.1f} msg/s); "
            f"fastest the limits allow {r['ideal']:.2f} s: ratio {r['ratio']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
