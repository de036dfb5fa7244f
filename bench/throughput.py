"""Throughput under load: the proxy against the same upstream called directly, in one run.

    python bench/throughput.py [--clients 200] [--seconds 20] [--latency-ms 300] [--workers 1]

The upstream stand-in answers after --latency-ms with realistic sizes (TTS: ~2.4 s of 24 kHz PCM in a
WAV; STT: 3 s of 16 kHz audio uploaded). For each of TTS and STT, --clients clients loop for
--seconds: first straight to the upstream (aiohttp, keep-alive), then through the proxy (the wyoming
client, a new connection per request as Home Assistant does). Meanwhile a prober sends `describe`
every 20 ms. Prints req/s and latency for both paths, the ratio, describe p99, the proxy's CPU time
per request, its memory, and how many upstream connections it opened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from audio_samples import tone, wav  # noqa: E402
from common import KEY, percentile, start_proxy, start_upstream, stop  # noqa: E402

TEXT = "The living room lamp is now on, and the kitchen light is off. Good night, sleep well!" + " x" * 17
STT_AUDIO = tone(3.0, 16000)
STT_WAV = wav(STT_AUDIO, 16000)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS in bytes) of a process and its children (--workers), from /proc."""
    cpu, rss = 0.0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


async def loop_for(seconds: float, clients: int, request) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await request()
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", choices=("TTS", "STT"), help="measure one direction only")
    args = parser.parse_args()

    upstream, url = await start_upstream("--delay-ms", str(args.latency_ms), "--chunk-bytes", "16384")
    proxy, port = await start_proxy(
        url, "--tts-voices", "alloy", "--max-connections", "1000", "--stt-backend", "OPENAI", "--tts-backend", "OPENAI",
        "--workers", str(args.workers),
    )  # fmt: skip

    connector = aiohttp.TCPConnector(limit=args.clients)
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}, connector=connector)

    async def direct_tts() -> None:
        body = {"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy", "response_format": "wav"}
        async with session.post(f"{url}/audio/speech", json=body) as response:
            await response.read()

    async def direct_stt() -> None:
        form = aiohttp.FormData()
        form.add_field("file", STT_WAV, filename="audio.wav", content_type="audio/wav")
        form.add_field("model", "gpt-4o-mini-transcribe")
        form.add_field("response_format", "json")
        async with session.post(f"{url}/audio/transcriptions", data=form) as response:
            await response.json()

    async def proxy_tts() -> None:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text=TEXT).event())
            while (event := await client.read_event()).type != "audio-stop":
                if event.type == "error":
                    raise RuntimeError(event.data.get("text"))

    chunk_events = [
        AudioChunk(rate=16000, width=2, channels=1, audio=STT_AUDIO[i : i + 32000]).event() for i in range(0, len(STT_AUDIO), 32000)
    ]

    async def proxy_stt() -> None:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for event in chunk_events:
                await client.write_event(event)
            await client.write_event(AudioStop().event())
            while (event := await client.read_event()).type != "transcript":
                if event.type == "error":
                    raise RuntimeError(event.data.get("text"))

    describe_times: list[float] = []

    async def probe(done: asyncio.Event) -> None:
        # In its own process: this one is busy being 200 clients, and would time itself, not the proxy.
        prober = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "describe_probe.py"), str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await done.wait()
        output, _ = await prober.communicate(b"stop\n")
        describe_times.extend(float(line) for line in output.split())

    rows = []
    try:
        for name, direct, proxied in (("TTS", direct_tts, proxy_tts), ("STT", direct_stt, proxy_stt)):
            if args.only and name != args.only:
                continue
            await loop_for(2, 20, direct)  # warm-up
            up0, me0 = process_stats(upstream.pid)[0], own_cpu()
            direct_lat = await loop_for(args.seconds, args.clients, direct)
            up1, me1 = process_stats(upstream.pid)[0], own_cpu()
            print(f"{name} direct: CPU ms/req upstream {(up1 - up0) / len(direct_lat) * 1000:.2f}, load generator {(me1 - me0) / len(direct_lat) * 1000:.2f}")
            await loop_for(2, 20, proxied)
            cpu0, _ = process_stats(proxy.pid)
            up0, me0 = process_stats(upstream.pid)[0], own_cpu()
            probing_done = asyncio.Event()
            prober = asyncio.create_task(probe(probing_done))
            rss_samples: list[int] = []

            async def sample_rss() -> None:
                while True:
                    rss_samples.append(process_stats(proxy.pid)[1])
                    await asyncio.sleep(max(1.0, args.seconds / 12))

            async def upstream_connections() -> int:
                async with session.get(url.removesuffix("/v1") + "/_stats") as response:
                    return (await response.json())["connections"]

            connections_before = await upstream_connections()
            sampler = asyncio.create_task(sample_rss())
            proxy_lat = await loop_for(args.seconds, args.clients, proxied)
            sampler.cancel()
            opened = await upstream_connections() - connections_before  # (this query may add one)
            print(f"{name} proxy opened {opened} upstream connections for {args.clients} clients")
            print(f"{name} proxy RSS over the run (MB): " + " ".join(f"{r / 2**20:.0f}" for r in rss_samples))
            probing_done.set()
            await prober
            cpu1, rss = process_stats(proxy.pid)
            up1, me1 = process_stats(upstream.pid)[0], own_cpu()
            print(f"{name} proxy: CPU ms/req upstream {(up1 - up0) / len(proxy_lat) * 1000:.2f}, load generator {(me1 - me0) / len(proxy_lat) * 1000:.2f}, proxy {(cpu1 - cpu0) / len(proxy_lat) * 1000:.2f}")
            rows.append((name, direct_lat, proxy_lat, (cpu1 - cpu0) / max(1, len(proxy_lat)), rss))
    finally:
        await session.close()
        await stop(proxy, upstream)

    print(f"{args.clients} clients, {args.seconds:g} s each, upstream latency {args.latency_ms:g} ms, workers {args.workers}")
    print(f"{'':<5}{'direct req/s':>13}{'proxy req/s':>12}{'ratio':>7}{'direct p50':>11}{'proxy p50':>10}{'proxy p99':>10}"
          f"{'CPU ms/req':>11}{'RSS MB':>8}")  # fmt: skip
    for name, direct_lat, proxy_lat, cpu, rss in rows:
        direct_rate, proxy_rate = len(direct_lat) / args.seconds, len(proxy_lat) / args.seconds
        print(f"{name:<5}{direct_rate:>13.1f}{proxy_rate:>12.1f}{proxy_rate / direct_rate:>7.2f}"
              f"{percentile(direct_lat, 50) * 1000:>11.1f}{percentile(proxy_lat, 50) * 1000:>10.1f}"
              f"{percentile(proxy_lat, 99) * 1000:>10.1f}{cpu * 1000:>11.2f}{rss / 2**20:>8.1f}")  # fmt: skip
    print(f"describe under load: p50 {percentile(describe_times, 50) * 1000:.2f} ms, "
          f"p99 {percentile(describe_times, 99) * 1000:.2f} ms ({len(describe_times)} probes)")


if __name__ == "__main__":
    asyncio.run(main())
