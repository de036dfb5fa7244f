"""Added latency of the proxy over calling the upstream directly, measured in one run.

    python bench/latency.py [--requests 200] [--delay-ms 20] [--format wav]
                            [--variant NAME="FLAGS" ...] [--baseline NAME=/path/to/python ...]

Starts the upstream stand-in and the proxy as separate processes, then, one request at a time:
- TTS: time to the first audio (direct: first body bytes; proxy: first audio-chunk event);
- STT: time to the text (direct: the whole multipart request; proxy: from audio-stop to transcript,
  the audio having been streamed in 10 ms chunks as Home Assistant does).
Prints p50/p99 of both paths and the difference. --variant adds this checkout's proxy started with
other flags, --baseline another installed version; every path is measured in the same run, in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.ping import Ping
from wyoming.tts import Synthesize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from audio_samples import tone, wav  # noqa: E402
from common import KEY, add_comparisons, check_comparisons, percentile, start_comparisons, start_upstream, stop  # noqa: E402

TEXT = "The living room lamp is now on."


async def direct_tts(session: aiohttp.ClientSession, url: str, fmt: str) -> float:
    began = time.perf_counter()
    body = {"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy", "response_format": fmt}
    async with session.post(f"{url}/audio/speech", json=body) as response:
        await response.content.readany()
        first = time.perf_counter() - began
        await response.read()
    return first


async def proxy_tts(port: int) -> float:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        began = time.perf_counter()
        await client.write_event(Synthesize(text=TEXT).event())
        first = None
        while True:
            event = await client.read_event()
            if event.type == "audio-chunk" and first is None:
                first = time.perf_counter() - began
            if event.type == "audio-stop":
                return first


async def direct_stt(session: aiohttp.ClientSession, url: str, audio: bytes) -> float:
    began = time.perf_counter()
    form = aiohttp.FormData()
    form.add_field("file", wav(audio, 16000), filename="audio.wav", content_type="audio/wav")
    form.add_field("model", "gpt-4o-mini-transcribe")
    form.add_field("language", "en")
    form.add_field("response_format", "json")
    async with session.post(f"{url}/audio/transcriptions", data=form) as response:
        await response.json()
    return time.perf_counter() - began


async def proxy_stt(port: int, audio: bytes) -> float:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for start in range(0, len(audio), 320):
            await client.write_event(
                AudioChunk(rate=16000, width=2, channels=1, audio=audio[start : start + 320]).event()
            )
        # Home Assistant streams in real time, so the proxy has taken every chunk when audio-stop comes:
        # a ping's pong says the same here without waiting 2 s per request.
        await client.write_event(Ping().event())
        while (await client.read_event()).type != "pong":
            pass
        began = time.perf_counter()
        await client.write_event(AudioStop().event())
        while (await client.read_event()).type != "transcript":
            pass
        return time.perf_counter() - began


def row(name: str, direct: list[float], proxied: list[float]) -> str:
    d50, d99 = percentile(direct, 50) * 1000, percentile(direct, 99) * 1000
    p50, p99 = percentile(proxied, 50) * 1000, percentile(proxied, 99) * 1000
    return f"{name:<30}{d50:>10.2f}{d99:>10.2f}{p50:>10.2f}{p99:>10.2f}{p50 - d50:>12.2f}{p50 / d50:>8.3f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream answer latency")
    parser.add_argument("--format", default="wav", help="upstream TTS response_format")
    add_comparisons(parser)
    args = parser.parse_args()
    check_comparisons(parser, args)
    upstream, url = await start_upstream("--delay-ms", str(args.delay_ms))
    common = ("--tts-voices", "alloy", "--tts-response-format", args.format)
    proxies = {
        name: (process, port) for name, process, port in await start_comparisons(upstream, url, args, common, common)
    }
    audio = tone(2.0, 16000)
    tts: dict[str, list[float]] = {name: [] for name in ("direct", *proxies)}
    stt: dict[str, list[float]] = {name: [] for name in ("direct", *proxies)}
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
            for _ in range(5):  # warm every path
                await direct_tts(session, url, args.format)
                for _, port in proxies.values():
                    await proxy_tts(port)
            names = list(proxies)
            for index in range(args.requests):  # interleaved, so drift hits every path alike
                turn = names[index % len(names) :] + names[: index % len(names)]  # and no one always goes first
                tts["direct"].append(await direct_tts(session, url, args.format))
                for name in turn:
                    tts[name].append(await proxy_tts(proxies[name][1]))
                stt["direct"].append(await direct_stt(session, url, audio))
                for name in turn:
                    stt[name].append(await proxy_stt(proxies[name][1], audio))
    finally:
        await stop(*(process for process, _ in proxies.values()), upstream)
    print(f"{args.requests} requests each, upstream latency {args.delay_ms:g} ms, TTS format {args.format}")
    print(f"{'ms':<30}{'direct50':>10}{'direct99':>10}{'proxy50':>10}{'proxy99':>10}{'added p50':>12}{'ratio':>8}")
    for name in proxies:
        print(row(f"TTS first audio, {name}", tts["direct"], tts[name]))
    for name in proxies:
        print(row(f"STT transcript, {name}", stt["direct"], stt[name]))


if __name__ == "__main__":
    asyncio.run(main())
