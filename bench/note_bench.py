"""Video-note verification: the bot's own time per note, excluding the provider's.

    .venv/bin/python bench/note_bench.py [--rounds 20] [--seconds 10] [--provider-latency 0.3]

The real bot (python-telegram-bot on the fake Bot API, the Tencent client on the fake FaceID server) verifies
``--rounds`` users, each with a ``--seconds`` video note made with OpenCV (384 px square, as Telegram records them).
Per note it measures, from the moment the note is sent to the moment the answer reaches the Bot API, the total, the
fake provider's own time on ``LivenessRecognition`` (its latency included), and the difference: **the bot's own
time** (the update coming in, getFile and the download into memory, the checks, base64, signing, the upload on
loopback, the answer through the outbox). The baseline, measured in the same run on the same stack, is ``/help``
(an update in, one message out); the ratio says how many ``/help`` round trips a note costs the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.runtime.app import App
from core.runtime.config import validate
from core.runtime.roles import TelegramProcess
from tests.fakes.telegram import FakeTelegram
from tests.fakes.tencent import FakeTencent
from tests.videos import video_note

NAME, ID_NUMBER = "韩梅梅", "11010519491231002X"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def run(rounds: int, seconds: float, latency: float) -> None:
    note = await asyncio.to_thread(video_note, seconds, side=384, fps=30, seed=5)
    with FakeTelegram() as telegram, FakeTencent() as tencent:
        tencent.add_person(ID_NUMBER, NAME, "meimei")
        config = validate(
            {
                **telegram.config(),
                "storage": {"path": ":memory:"},
                "providers": {"tencent": tencent.provider_config()},
                "http": {"read_timeout": 30.0, "retries": 0},
                "access": {"daily_quota": {}},
                "plugins": {"realname": {"method": "video_note", "provider": "tencent", "poll_seconds": 3600}},
            }
        )
        transport = TelegramProcess(App(config))
        await transport.start()
        try:
            baseline = []
            for i in range(rounds):
                user = 9000 + i
                start = time.monotonic()
                telegram.user_sends_text("/help", user_id=user)
                reply = await telegram.bot_replied(user, timeout=30)
                baseline.append(reply.at - start)
            own, total, provider = [], [], []
            for i in range(rounds):
                user = 7000 + i
                telegram.user_sends_text("/verify", user_id=user)
                await telegram.bot_replied(user, timeout=30)
                telegram.user_sends_text(f"{NAME} {ID_NUMBER}", user_id=user)
                await telegram.bot_replied(user, timeout=30)
                tencent.set_video(note, "meimei", says=tencent.codes_issued[-1])
                tencent.latency = latency
                start = time.monotonic()
                # as if recorded for `seconds` after the code came: Telegram dates the message when it is sent
                sent = int(time.time() + seconds) + 1
                telegram.user_sends_video_note(note, duration=int(seconds), date=sent, user_id=user)
                answer = await telegram.bot_replied(user, timeout=60)
                tencent.latency = 0.0
                assert answer.text.startswith("✅"), answer.text
                began, ended = tencent.timings[-1]
                total.append(answer.at - start)
                provider.append(ended - began)
                own.append(total[-1] - provider[-1])
        finally:
            await transport.stop()
    help_median = statistics.median(baseline)
    size = f"{len(note) / 1024:.0f} KB"
    print(f"video note: {seconds:g} s, 384×384 mp4v, {size}; {rounds} notes; provider latency {latency:g} s")
    print(f"  /help round trip (baseline)    median {ms(help_median)}  p95 {ms(percentile(baseline, 0.95))}")
    print(f"  note, total                    median {ms(statistics.median(total))}  p95 {ms(percentile(total, 0.95))}")
    print(f"  note, the provider's time      median {ms(statistics.median(provider))}")
    own_p95 = percentile(own, 0.95)
    print(
        f"  note, the bot's own time       median {ms(statistics.median(own))}  p95 {ms(own_p95)}  "
        f"max {ms(max(own))}  ({statistics.median(own) / help_median:.1f}× the /help baseline)"
    )
    print(f"  p95 of the bot's own time under 1 s: {'yes' if own_p95 < 1.0 else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--provider-latency", type=float, default=0.3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.rounds, args.seconds, args.provider_latency))


if __name__ == "__main__":
    main()
