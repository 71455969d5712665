"""Benchmark: N concurrent callers × M OCR calls against the fake Baidu server (fixed latency, QPS cap).

Three clients, same workload:

- **ours**: :class:`core.providers.baidu.BaiduClient` (token service, shared rate limiter, retries);
- **naive**: the loop from Baidu's public sample code: a new token request and a new connection per
  call (``requests.post`` each time), no retry;
- **sdk**: the official ``baidu-aip`` SDK, one ``AipOcr`` shared by the callers (run in a subprocess,
  because it switches off TLS warnings process-wide).

For each: token fetches, throughput (successful calls per second of wall time), p50/p99 latency per
call as the caller sees it, errors surfaced to callers (error 18 separately) and the 18s the fake
sent (ours absorbs those it draws by retrying). Run::

    .venv/bin/python bench/baidu_bench.py [--callers 8] [--calls 6] [--qps 10] [--latency 0.05]

Target (issue 3): ours makes one token fetch, reaches ≥ 0.9 × the QPS cap, and surfaces no error 18.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from core.contract.errors import ProviderError  # noqa: E402
from core.infra.http import HttpSettings  # noqa: E402
from core.infra.images import OCR_LIMITS, prepare  # noqa: E402
from core.infra.tokens import TokenService  # noqa: E402
from core.providers.baidu import BaiduClient  # noqa: E402
from tests.fakes.baidu import OCR_PREFIX, TOKEN_PATH, FakeBaidu  # noqa: E402


@dataclass
class Outcome:
    """What one client achieved."""

    name: str
    token_fetches: int = 0
    server_18: int = 0
    wall: float = 0.0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def sample_image() -> bytes:
    """A small text image, made in memory."""
    im = Image.new("RGB", (480, 120), "white")
    ImageDraw.Draw(im).text((20, 40), "Hello TSINGTAO 2026", fill="black")
    out = io.BytesIO()
    im.save(out, "PNG")
    return prepare(out.getvalue(), OCR_LIMITS).data


def run_threads(callers: int, calls: int, one_call: Callable[[], str | None], outcome: Outcome) -> None:
    """``callers`` threads × ``calls`` calls; ``one_call`` returns ``None`` or an error label."""
    lock = threading.Lock()
    barrier = threading.Barrier(callers + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(calls):
            started = time.perf_counter()
            try:
                error = one_call()
            except Exception as exc:  # a benchmark counts failures instead of stopping
                error = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                outcome.latencies.append(elapsed)
                if error is None:
                    outcome.ok += 1
                else:
                    outcome.errors[error] += 1

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    outcome.wall = time.perf_counter() - started


def bench_ours(fake: FakeBaidu, image: bytes, callers: int, calls: int, qps: float) -> Outcome:
    outcome = Outcome("ours")
    client = BaiduClient(
        fake.api_key,
        fake.secret_key,
        endpoint=fake.endpoint,
        qps=qps,
        http=HttpSettings(retries=3, backoff=0.2, pool_size=callers),
        tokens=TokenService(),
    )
    before, before_18 = fake.token_fetches, fake.errors_sent[18]

    def one() -> str | None:
        try:
            client.ocr(image)
        except ProviderError as exc:
            return f"{type(exc).__name__}({exc.code})"
        return None

    run_threads(callers, calls, one, outcome)
    outcome.token_fetches = fake.token_fetches - before
    outcome.server_18 = fake.errors_sent[18] - before_18
    client.close()
    return outcome


def bench_naive(fake: FakeBaidu, image: bytes, callers: int, calls: int) -> Outcome:
    outcome = Outcome("naive")
    before, before_18 = fake.token_fetches, fake.errors_sent[18]
    b64 = base64.b64encode(image).decode()

    def one() -> str | None:
        token = requests.post(
            fake.endpoint + TOKEN_PATH,
            params={"grant_type": "client_credentials", "client_id": fake.api_key, "client_secret": fake.secret_key},
            timeout=30,
        ).json()["access_token"]
        body = requests.post(
            fake.endpoint + OCR_PREFIX + "general_basic",
            params={"access_token": token},
            data={"image": b64},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        ).json()
        return f"error {body['error_code']}" if "error_code" in body else None

    run_threads(callers, calls, one, outcome)
    outcome.token_fetches = fake.token_fetches - before
    outcome.server_18 = fake.errors_sent[18] - before_18
    return outcome


SDK_WORKER = textwrap.dedent(
    """
    import base64, json, sys, threading, time
    from aip import AipOcr
    endpoint, api_key, secret_key, b64, callers, calls = sys.argv[1:7]
    callers, calls, image = int(callers), int(calls), base64.b64decode(b64)
    client = AipOcr("10000001", api_key, secret_key)
    client._AipBase__accessTokenUrl = endpoint + "/oauth/2.0/token"
    client._AipOcr__generalBasicUrl = endpoint + "/rest/2.0/ocr/v1/general_basic"
    lock, latencies, errors, ok = threading.Lock(), [], {}, [0]
    barrier = threading.Barrier(callers + 1)
    def worker():
        barrier.wait()
        for _ in range(calls):
            t = time.perf_counter()
            try:
                body = client.basicGeneral(image)
                error = "error %s" % body["error_code"] if "error_code" in body else None
            except Exception as exc:
                error = type(exc).__name__
            with lock:
                latencies.append(time.perf_counter() - t)
                if error is None:
                    ok[0] += 1
                else:
                    errors[error] = errors.get(error, 0) + 1
    threads = [threading.Thread(target=worker) for _ in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    print(json.dumps({"wall": time.perf_counter() - t0, "ok": ok[0], "latencies": latencies, "errors": errors}))
    """
)


def bench_sdk(fake: FakeBaidu, image: bytes, callers: int, calls: int) -> Outcome | None:
    outcome = Outcome("sdk")
    before, before_18 = fake.token_fetches, fake.errors_sent[18]
    args = [fake.endpoint, fake.api_key, fake.secret_key, base64.b64encode(image).decode(), str(callers), str(calls)]
    done = subprocess.run(
        [sys.executable, "-c", SDK_WORKER, *args], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        print(f"(sdk run failed: {done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    data = json.loads(done.stdout)
    outcome.wall, outcome.ok, outcome.latencies = data["wall"], data["ok"], data["latencies"]
    outcome.errors.update(data["errors"])
    outcome.token_fetches = fake.token_fetches - before
    outcome.server_18 = fake.errors_sent[18] - before_18
    return outcome


def settle(fake: FakeBaidu, qps: float) -> None:
    """Let the fake's QPS bucket refill between runs, so each client starts from the same state."""
    time.sleep(max(1.0, 1.5 * max(1.0, qps) / qps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers")
    parser.add_argument("--calls", type=int, default=6, help="OCR calls per caller")
    parser.add_argument("--qps", type=float, default=10, help="the fake's QPS cap (ours is configured to it)")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake's latency per API call (s)")
    parser.add_argument("--burst", type=float, default=None, help="the fake's burst allowance (default: qps)")
    parser.add_argument("--client-qps", type=float, default=None, help="our client's qps setting (default: qps)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR)  # ours logs each absorbed 18 as a warning; the table counts them
    image = sample_image()
    with FakeBaidu(qps_cap=args.qps, latency=args.latency) as fake:
        fake.qps_burst = args.burst
        client_qps = args.client_qps or args.qps
        results = [bench_ours(fake, image, args.callers, args.calls, client_qps)]
        settle(fake, args.qps)
        results.append(bench_naive(fake, image, args.callers, args.calls))
        settle(fake, args.qps)
        sdk = bench_sdk(fake, image, args.callers, args.calls)
        if sdk is not None:
            results.append(sdk)

    total = args.callers * args.calls
    print(
        f"{args.callers} callers × {args.calls} OCR calls = {total}; fake: QPS cap {args.qps:g}, "
        f"burst {args.burst if args.burst is not None else args.qps:g}, latency {args.latency * 1000:.0f} ms\n"
    )
    print("| client | token fetches | ok | ok/s | vs cap | p50 ms | p99 ms | errors surfaced | 18 surfaced | 18 sent |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "none"
        eighteen = sum(v for k, v in r.errors.items() if "18" in k)
        print(
            f"| {r.name} | {r.token_fetches} | {r.ok}/{total} | {r.throughput:.2f} | {r.throughput / args.qps:.2f} | "
            f"{r.percentile(50) * 1000:.0f} | {r.percentile(99) * 1000:.0f} | {errors} | {eighteen} | {r.server_18} |"
        )
    ours = results[0]
    print()
    for other in results[1:]:
        ratio = ours.throughput / other.throughput if other.throughput else float("inf")
        done = ours.ok / other.ok if other.ok else float("inf")
        print(
            f"ours vs {other.name}: successful calls ×{done:.2f}, throughput ×{ratio:.2f}, "
            f"token fetches {ours.token_fetches} vs {other.token_fetches}, "
            f"errors surfaced {sum(ours.errors.values())} vs {sum(other.errors.values())}"
        )
    eighteen = sum(v for k, v in ours.errors.items() if "18" in k)
    met = ours.token_fetches == 1 and ours.throughput >= 0.9 * args.qps and eighteen == 0
    print(
        f"\ntarget (1 token fetch, ≥ 0.9 × cap, no error 18 surfaced): {'met' if met else 'NOT met'} "
        f"({ours.token_fetches} fetch, {ours.throughput / args.qps:.2f} × cap, {eighteen} × 18)"
    )


if __name__ == "__main__":
    main()
