"""What a refusing primary costs: the fallback alone against the fallback behind a primary that
refuses connections, measured in one run.

    python bench/failover.py [--rounds 10] [--requests 20] [--delay-ms 20]

"alone": a proxy whose primary is the stand-in. "refused": a proxy whose primary is a closed port and
whose fallback is the same stand-in. Each round starts the "refused" proxy afresh, so its first
requests (until the breaker opens, after 3 failures) try the primary first ("breaker closed"); the
rest skip it ("breaker open"). The goal: within 0.5 s of the fallback alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audio_samples import tone  # noqa: E402
from common import KEY, free_port, percentile, run, start_proxy, start_upstream, stop  # noqa: E402
from latency import proxy_stt, proxy_tts  # noqa: E402

FAILURES_TO_OPEN = 3  # failover.FAILURES_TO_OPEN


async def measure(port: int, audio: bytes, requests: int) -> tuple[list[float], list[float]]:
    tts, stt = [], []
    for _ in range(requests):
        tts.append(await proxy_tts(port))
        stt.append(await proxy_stt(port, audio))
    return tts, stt


def row(name: str, values: list[float], alone: list[float]) -> str:
    p50, p99, a50 = percentile(values, 50) * 1000, percentile(values, 99) * 1000, percentile(alone, 50) * 1000
    return f"{name:<50}{len(values):>6}{p50:>10.2f}{p99:>10.2f}{p50 - a50:>12.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20, help="requests per round, each direction")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream answer latency")
    args = parser.parse_args()
    upstream, url = await start_upstream("--delay-ms", str(args.delay_ms))
    common = ("--tts-voices", "alloy", "--stt-backend", "openai", "--tts-backend", "openai")
    refused = f"http://127.0.0.1:{free_port()}/v1"
    fallback = ("--stt-fallback-url", url, "--stt-fallback-key", KEY, "--tts-fallback-url", url, "--tts-fallback-key", KEY)  # fmt: skip
    audio = tone(2.0, 16000)
    results: dict[str, list[float]] = {}
    try:
        alone, alone_port = await start_proxy(url, *common)
        try:
            await measure(alone_port, audio, 5)  # warm up
            results["tts alone"], results["stt alone"] = await measure(alone_port, audio, args.rounds * args.requests)
        finally:
            await stop(alone)
        for key in ("tts closed", "stt closed", "tts open", "stt open"):
            results[key] = []
        for _ in range(args.rounds):
            proxy, port = await start_proxy(
                url, *common, "--stt-openai-url", refused, "--tts-openai-url", refused, *fallback
            )
            try:
                tts, stt = await measure(port, audio, args.requests)
            finally:
                await stop(proxy)
            # TTS and STT alternate, each direction with its own breaker: its first three try the primary.
            results["tts closed"] += tts[:FAILURES_TO_OPEN]
            results["tts open"] += tts[FAILURES_TO_OPEN:]
            results["stt closed"] += stt[:FAILURES_TO_OPEN]
            results["stt open"] += stt[FAILURES_TO_OPEN:]
    finally:
        await stop(upstream)
    print(f"upstream latency {args.delay_ms:g} ms; {args.rounds} rounds of {args.requests} requests per direction")
    print(f"{'ms':<50}{'n':>6}{'p50':>10}{'p99':>10}{'vs alone':>12}")
    for direction, what in (("tts", "TTS first audio"), ("stt", "STT transcript")):
        alone = results[f"{direction} alone"]
        print(row(f"{what}, fallback alone", alone, alone))
        print(row(f"{what}, primary refused, breaker closed", results[f"{direction} closed"], alone))
        print(row(f"{what}, primary refused, breaker open", results[f"{direction} open"], alone))


if __name__ == "__main__":
    run(main())
