"""Latency the OpenAI-compatible API adds over calling the Wyoming server directly.

Runs the tone-speaking Wyoming test server and the API (``python -m wyoming_openai.openai_api``) as
separate processes on loopback, then, in one run, alternates the same request made both ways:
- direct: the wyoming library's client (connect, request, read to the last event), as the API does;
- via HTTP: aiohttp with a kept-alive connection (no SDK overhead, which is the client's own).
Added latency = median of the paired differences (and p99 of them). The goal is ≤ 2 ms at p50.

    python bench/openai_api_latency.py [--requests 300] [--warmup 30]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "openai_api"))

from tone_wyoming import free_port, tone  # noqa: E402

from wyoming_openai.openai_api.wyoming_pool import ASR_CHUNK_BYTES  # noqa: E402

TEXT = "hello world"  # half a second of 22.05 kHz tone: 22 kB of PCM
ASR_SECONDS = 1.0


Timing = tuple[float, float | None]  # (to the last byte, to the first audio byte or None)


async def direct_speech(port: int) -> Timing:
    started = time.perf_counter()
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    first = None
    try:
        await client.write_event(Synthesize(text=TEXT, voice=SynthesizeVoice(name="low")).event())
        while True:
            event = await client.read_event()
            assert event is not None
            if first is None and AudioChunk.is_type(event.type):
                first = time.perf_counter() - started
            if AudioStop.is_type(event.type):
                break
    finally:
        await client.disconnect()
    return time.perf_counter() - started, first


async def direct_transcription(port: int, pcm: bytes) -> Timing:
    started = time.perf_counter()
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for offset in range(0, len(pcm), ASR_CHUNK_BYTES):
            await client.write_event(
                AudioChunk(rate=16000, width=2, channels=1, audio=pcm[offset : offset + ASR_CHUNK_BYTES]).event()
            )
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            assert event is not None
            if Transcript.is_type(event.type):
                break
    finally:
        await client.disconnect()
    return time.perf_counter() - started, None


def http_speech(session: aiohttp.ClientSession, url: str, response_format: str) -> Callable[[], Awaitable[Timing]]:
    body = {"model": "tone-tts", "voice": "low", "input": TEXT, "response_format": response_format}

    async def run() -> Timing:
        started = time.perf_counter()
        async with session.post(url + "/audio/speech", json=body) as response:
            assert response.status == 200, await response.text()
            await response.content.readany()
            first = time.perf_counter() - started
            await response.read()
        return time.perf_counter() - started, first

    return run


def http_transcription(session: aiohttp.ClientSession, url: str, upload: bytes) -> Callable[[], Awaitable[Timing]]:
    async def run() -> Timing:
        form = aiohttp.FormData()
        form.add_field("file", upload, filename="a.wav", content_type="audio/wav")
        form.add_field("model", "echo-asr")
        form.add_field("language", "en")
        started = time.perf_counter()
        async with session.post(url + "/audio/transcriptions", data=form) as response:
            assert response.status == 200, await response.text()
            await response.read()
        return time.perf_counter() - started, None

    return run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(
    direct: Callable[[], Awaitable[Timing]], via_api: Callable[[], Awaitable[Timing]], requests: int, warmup: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per request: direct time, API time, and the paired differences to the last and the first byte."""
    for _ in range(warmup):
        await direct()
        await via_api()
    direct_times, api_times, added, first_added = [], [], [], []
    for index in range(requests):
        # Alternate which goes first, so neither always meets a warmer or colder server.
        if index % 2:
            (d, d_first), (a, a_first) = await direct(), await via_api()
        else:
            (a, a_first), (d, d_first) = await via_api(), await direct()
        direct_times.append(d)
        api_times.append(a)
        added.append(a - d)
        if d_first is not None and a_first is not None:
            first_added.append(a_first - d_first)
    return direct_times, api_times, added, first_added


async def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"a benchmark server did not start (exit {process.returncode})") from None
            await asyncio.sleep(0.05)


async def bench(requests: int, warmup: int) -> None:
    wyoming_port, api_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "app"), os.environ.get("PYTHONPATH", "")])}
    processes = [
        subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_api" / "tone_wyoming.py"), "--port", str(wyoming_port)], env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen(
            [sys.executable, "-m", "wyoming_openai.openai_api", "--host", "127.0.0.1", "--port", str(api_port),
             "--wyoming-uris", f"tcp://127.0.0.1:{wyoming_port}", "--log-level", "WARNING", "--refresh-interval", "0"],
            env=env,
        ),
    ]  # fmt: skip
    try:
        await wait_for_port(wyoming_port, processes[0])
        await wait_for_port(api_port, processes[1])
        url = f"http://127.0.0.1:{api_port}/v1"
        pcm = tone(ASR_SECONDS, 16000, 440.0)
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm)
        upload = out.getvalue()
        rows = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            await asyncio.sleep(0.5)  # let the API's first describe finish
            cases = [
                ("speech wav (pass-through)", lambda: direct_speech(wyoming_port), http_speech(session, url, "wav")),
                ("speech pcm (22.05→24 kHz)", lambda: direct_speech(wyoming_port), http_speech(session, url, "pcm")),
                ("speech mp3 (encoded)", lambda: direct_speech(wyoming_port), http_speech(session, url, "mp3")),
                ("transcription 1 s wav upload", lambda: direct_transcription(wyoming_port, pcm), http_transcription(session, url, upload)),
            ]  # fmt: skip
            for name, direct, via_api in cases:
                rows.append((name, *await measure(direct, via_api, requests, warmup)))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)

    ms = 1000.0
    print(f"\n{requests} requests each (after {warmup} warm-up), Python {sys.version.split()[0]}, loopback")
    header = (
        f"{'request':30} {'direct p50':>10} {'direct p99':>10} {'API p50':>8} {'API p99':>8} "
        f"{'added p50':>9} {'added p99':>9} {'1st audio +p50':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, direct_times, api_times, added, first_added in rows:
        first = f"{statistics.median(first_added) * ms:14.2f}" if first_added else f"{'-':>14}"
        print(
            f"{name:30} {statistics.median(direct_times) * ms:10.2f} {percentile(direct_times, 0.99) * ms:10.2f} "
            f"{statistics.median(api_times) * ms:8.2f} {percentile(api_times, 0.99) * ms:8.2f} "
            f"{statistics.median(added) * ms:9.2f} {percentile(added, 0.99) * ms:9.2f} {first}"
        )
    print("(milliseconds; 'added' = median and p99 of paired differences, API minus direct, to the last byte;")
    print(" '1st audio +p50' = the same for the first audio byte: what a streaming player waits extra)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    cli = parser.parse_args()
    asyncio.run(bench(cli.requests, cli.warmup))
