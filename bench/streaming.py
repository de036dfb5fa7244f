"""Streaming TTS against the ideal pipeline, in one run.

    python bench/streaming.py [--latency-ms 300] [--tokens-per-second 30] [--runs 3]

A six-sentence paragraph goes to the proxy as Home Assistant sends an LLM's reply: synthesize-start,
one synthesize-chunk per token at the given rate, the full synthesize, synthesize-stop. The upstream
stand-in answers each sentence after --latency-ms and streams its audio at twice real time.

The client "plays" audio in real time as it arrives. Ideal: audio starts one upstream latency after
the first sentence is complete and then plays without a gap, ending at that + the audio's duration.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import KEY, start_proxy, start_upstream, stop  # noqa: E402

PARAGRAPH = (
    "Good evening, the house is ready for the night. "
    "The front door is locked and the garage door is closed. "
    "All the lights downstairs are off, except the one in the hallway. "
    "The living room is at twenty one degrees and the heating is set to eighteen. "
    "Tomorrow will be sunny with a high of twenty four degrees. "
    "Your alarm is set for seven o'clock, sleep well!"
)
FIRST_SENTENCE_END = PARAGRAPH.index("night.") + len("night.")


def llm_tokens(text: str) -> list[str]:
    out = []
    for i, word in enumerate(text.split(" ")):
        prefix = "" if i == 0 else " "
        if word[-1] in ".,!":
            out += [prefix + word[:-1], word[-1]]
        else:
            out.append(prefix + word)
    return out


async def one_run(port: int, tokens_per_second: float, latency: float) -> tuple[float, float, float]:
    tokens = llm_tokens(PARAGRAPH)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        began = time.perf_counter()
        first_sentence_done: float | None = None  # when a token after the first sentence's end was sent

        async def send() -> None:
            nonlocal first_sentence_done
            await client.write_event(SynthesizeStart().event())
            sent = ""
            for token in tokens:
                await client.write_event(SynthesizeChunk(text=token).event())
                sent += token
                if first_sentence_done is None and len(sent) > FIRST_SENTENCE_END:
                    first_sentence_done = time.perf_counter()
                await asyncio.sleep(1 / tokens_per_second)
            await client.write_event(Synthesize(text=PARAGRAPH).event())
            await client.write_event(SynthesizeStop().event())

        sender = asyncio.create_task(send())
        playback_end = None
        first_audio = None
        audio_seconds = 0.0
        while True:
            event = await client.read_event()
            now = time.perf_counter()
            if event.type == "audio-chunk":
                chunk = AudioChunk.from_event(event)
                seconds = len(chunk.audio) / (chunk.rate * chunk.width * chunk.channels)
                if first_audio is None:
                    first_audio = now
                playback_end = max(playback_end or now, now) + seconds
                audio_seconds += seconds
            elif event.type == "synthesize-stopped":
                break
        await sender
    assert first_audio is not None and first_sentence_done is not None and playback_end is not None
    ideal_end = first_sentence_done + latency + audio_seconds
    return (
        (first_audio - first_sentence_done) * 1000,
        (playback_end - began) / (ideal_end - began),
        audio_seconds,
    )


async def direct_first_byte(url: str) -> float:
    """The first sentence sent straight to the upstream: time to its first audio bytes, in ms."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        body = {"model": "tts-1", "voice": "alloy", "response_format": "pcm", "input": PARAGRAPH[:FIRST_SENTENCE_END]}
        async with session.post(f"{url}/audio/speech", json=body) as warm:
            await warm.read()
        began = time.perf_counter()
        async with session.post(f"{url}/audio/speech", json=body) as response:
            await response.content.readany()
            first = time.perf_counter() - began
            await response.read()
    return first * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--tokens-per-second", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrent-requests", type=int, default=3)
    args = parser.parse_args()
    # pcm at 24 kHz: 4800-byte chunks are 0.1 s of audio, sent every 0.05 s (twice real time).
    upstream, url = await start_upstream(
        "--delay-ms", str(args.latency_ms), "--chunk-bytes", "4800", "--chunk-delay-ms", "50"
    )
    proxy, port = await start_proxy(
        url, "--stt-models", "--tts-models", "tts-1", "--tts-streaming-models", "tts-1", "--tts-voices", "alloy",
        "--tts-response-format", "pcm", "--tts-concurrent-requests", str(args.concurrent_requests),
    )  # fmt: skip
    try:
        direct = [await direct_first_byte(url) for _ in range(args.runs + 2)][2:]
        results = [await one_run(port, args.tokens_per_second, args.latency_ms / 1000) for _ in range(args.runs)]
    finally:
        await stop(proxy, upstream)
    first = [r[0] for r in results]
    ratio = [r[1] for r in results]
    print(f"{args.runs} runs: 6 sentences, {args.tokens_per_second:g} tokens/s, upstream latency {args.latency_ms:g} ms, "
          f"{results[0][2]:.1f} s of audio, {args.concurrent_requests} requests at once")  # fmt: skip
    upstream_first = statistics.median(direct)
    print(f"first audio after the first sentence is complete: median {statistics.median(first):.1f} ms; "
          f"the upstream called directly for that sentence: {upstream_first:.1f} ms to its first byte; "
          f"added {statistics.median(first) - upstream_first:.1f} ms")  # fmt: skip
    print(f"playback end vs ideal pipeline: median {statistics.median(ratio):.3f}x, worst {max(ratio):.3f}x")


if __name__ == "__main__":
    asyncio.run(main())
