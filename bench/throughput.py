"""Throughput under load: the proxy against the same upstream called directly, in one run.

    python bench/throughput.py [--clients 200] [--seconds 20] [--latency-ms 300] [--workers 1]
                               [--variant NAME="FLAGS" ...] [--baseline NAME=/path/to/other/venv/bin/python ...]

The upstream stand-in answers after --latency-ms with realistic sizes (TTS: ~2.4 s of 24 kHz PCM in a
WAV; STT: 3 s of 16 kHz audio uploaded). For each of TTS and STT, --clients clients loop for
--seconds: first straight to the upstream (aiohttp, keep-alive), then through the proxy (a new
connection per request, as Home Assistant does; STT audio in Home Assistant's 10 ms chunks, ten to
a write). Meanwhile a prober sends `describe` every 20 ms. Prints req/s and latency for each
path, the ratio to direct, describe p50/p99, the proxy's CPU time per request, its memory over the
run, and how many upstream connections it opened. The load generator and the upstream run at nice
10 (--equal-priority: not): they stand for other machines, and on a small machine would otherwise
starve the proxy and the prober, so that the figures would be the scheduler's.

--baseline runs the wyoming_openai installed for another interpreter through the same load in the
same run, so before and after are measured side by side: for example 0.8.0 from PyPI
(`python3.12 -m venv /tmp/v080 && /tmp/v080/bin/pip install wyoming-openai==0.8.0`, then
`--baseline 0.8.0=/tmp/v080/bin/python`), or an earlier commit installed the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_read_event, write_event
from wyoming.tts import Synthesize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from audio_samples import tone, wav  # noqa: E402
from common import KEY, add_comparisons, check_comparisons, percentile, run, start_comparisons, start_upstream, stop  # noqa: E402

TEXT = "The living room lamp is now on, and the kitchen light is off. Good night, sleep well!" + " x" * 17
STT_AUDIO = tone(3.0, 16000)
STT_WAV = wav(STT_AUDIO, 16000)
HA_CHUNK_BYTES = 320  # Home Assistant's assist pipeline hands STT 10 ms of 16 kHz audio at a time


def wire(event: Event) -> bytes:
    """The event encoded once by the wyoming library, so 200 clients cost the load generator little."""
    buffer = io.BytesIO()
    write_event(event, buffer)
    return buffer.getvalue()


STT_EVENTS = [
    wire(Transcribe(language="en").event()),
    wire(AudioStart(rate=16000, width=2, channels=1).event()),
    *(
        wire(AudioChunk(rate=16000, width=2, channels=1, audio=STT_AUDIO[i : i + HA_CHUNK_BYTES]).event())
        for i in range(0, len(STT_AUDIO), HA_CHUNK_BYTES)
    ),
    wire(AudioStop().event()),
]
# A satellite streams in real time, 10 chunks per 100 ms; the load generator sends each 100 ms of
# audio in one write, so its own CPU (which shares this machine with the proxy) stays small. By
# default all of them at once (3 s of speech in a burst, the hardest case); --live at the pace of speech.
STT_WRITES = [b"".join(STT_EVENTS[i : i + 10]) for i in range(0, len(STT_EVENTS), 10)]
LIVE_PACE = 0.1  # seconds of audio in each write


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


async def proxy_tts(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=TEXT).event())
        while (event := await client.read_event()).type != "audio-stop":
            if event.type == "error":
                raise RuntimeError(event.data.get("text"))


async def proxy_stt(port: int, live: bool = False) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for events in STT_WRITES:
            writer.write(events)
            if live:
                await writer.drain()
                await asyncio.sleep(LIVE_PACE)
        await writer.drain()
        while (event := await async_read_event(reader)) is not None and event.type != "transcript":
            if event.type == "error":
                raise RuntimeError(event.data.get("text"))
        if event is None:
            raise RuntimeError("the proxy closed the connection without a transcript")
    finally:
        writer.close()


async def start_describe_probe(port: int) -> asyncio.subprocess.Process:
    # In its own process: this one is busy being 200 clients, and would time itself, not the proxy.
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "describe_probe.py"), str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def describe_probe(prober: asyncio.subprocess.Process, done: asyncio.Event) -> list[float]:
    prober.stdin.write(b"go\n")  # type: ignore[union-attr]
    await done.wait()
    output, _ = await prober.communicate(b"stop\n")
    return [float(line) for line in output.split()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--jitter", type=float, default=0.0,
        help="the upstream's latency varies by up to this fraction (0.2: ±20 %%); 0 keeps the clients in lock-step",
    )  # fmt: skip
    parser.add_argument("--only", choices=("TTS", "STT"), help="measure one direction only")
    parser.add_argument(
        "--live", action="store_true",
        help="send STT audio at the pace it is spoken, as satellites do (default: each utterance in one burst)",
    )  # fmt: skip
    add_comparisons(parser)
    parser.add_argument(
        "--equal-priority", action="store_true",
        help="leave the load generator and the upstream stand-in at the proxy's CPU priority",
    )  # fmt: skip
    args = parser.parse_args()
    check_comparisons(parser, args)
    return args


@dataclass
class Measurement:
    """The load generator's side of a run: the upstream, the session to it, and what is measured."""

    args: argparse.Namespace
    upstream: asyncio.subprocess.Process
    url: str
    session: aiohttp.ClientSession

    async def direct_tts(self) -> None:
        body = {"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy", "response_format": "wav"}
        async with self.session.post(f"{self.url}/audio/speech", json=body) as response:
            await response.read()

    async def direct_stt(self) -> None:
        form = aiohttp.FormData()
        form.add_field("file", STT_WAV, filename="audio.wav", content_type="audio/wav")
        form.add_field("model", "gpt-4o-mini-transcribe")
        form.add_field("response_format", "json")
        async with self.session.post(f"{self.url}/audio/transcriptions", data=form) as response:
            await response.json()

    async def upstream_connections(self) -> int:
        async with self.session.get(self.url.removesuffix("/v1") + "/_stats") as response:
            return (await response.json())["connections"]

    async def direct_path(self, name: str, request) -> tuple:
        """The upstream called straight, after a warm-up: the row the proxies are compared with."""
        await loop_for(3, self.args.clients, request)  # warm-up: pools filled, as in the steady state measured
        up0, me0 = process_stats(self.upstream.pid)[0], own_cpu()
        latencies = await loop_for(self.args.seconds, self.args.clients, request)
        up1, me1 = process_stats(self.upstream.pid)[0], own_cpu()
        print(f"{name} direct: CPU ms/req upstream {(up1 - up0) / len(latencies) * 1000:.2f}, "
              f"load generator {(me1 - me0) / len(latencies) * 1000:.2f}")  # fmt: skip
        return (name, "direct", latencies, None)

    async def proxy_path(
        self, name: str, label: str, proxy: asyncio.subprocess.Process, request, prober: asyncio.subprocess.Process
    ) -> tuple:
        """One proxy under load, after a warm-up, with `describe` probed and its memory sampled meanwhile."""
        connections_before = await self.upstream_connections()  # counted from before the warm-up
        await loop_for(3, self.args.clients, request)
        cpu0, _ = process_stats(proxy.pid)
        up0, me0 = process_stats(self.upstream.pid)[0], own_cpu()
        probing_done = asyncio.Event()
        probing = asyncio.create_task(describe_probe(prober, probing_done))
        rss_samples: list[int] = []

        async def sample_rss() -> None:
            while True:
                rss_samples.append(process_stats(proxy.pid)[1])
                await asyncio.sleep(max(1.0, self.args.seconds / 12))

        sampler = asyncio.create_task(sample_rss())
        latencies = await loop_for(self.args.seconds, self.args.clients, request)
        sampler.cancel()
        opened = await self.upstream_connections() - connections_before  # (this query may add one)
        probing_done.set()
        describe_times = await probing
        cpu1, rss = process_stats(proxy.pid)
        up1, me1 = process_stats(self.upstream.pid)[0], own_cpu()
        print(f"{name} {label}: CPU ms/req upstream {(up1 - up0) / len(latencies) * 1000:.2f}, "
              f"load generator {(me1 - me0) / len(latencies) * 1000:.2f}; "
              f"{opened} upstream connections opened; RSS over the run (MB): "
              + " ".join(f"{r / 2**20:.0f}" for r in rss_samples))  # fmt: skip
        return (name, label, latencies, ((cpu1 - cpu0) / max(1, len(latencies)), rss, opened, describe_times))


def print_table(args: argparse.Namespace, rows: list[tuple]) -> None:
    print(f"{args.clients} clients, {args.seconds:g} s each, upstream latency {args.latency_ms:g} ms ±{args.jitter:.0%}, workers {args.workers}, "
          f"load generator and upstream at {'the same' if args.equal_priority else 'lower (nice 10)'} CPU priority")  # fmt: skip
    print(f"{'':<14}{'req/s':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/req':>11}{'RSS MB':>8}"
          f"{'conns':>7}{'describe p50':>13}{'p99 ms':>8}")  # fmt: skip
    direct_rate = 0.0
    for name, label, latencies, proxy_stats in rows:
        rate = len(latencies) / args.seconds
        line = f"{name + ' ' + label:<14}{rate:>8.1f}"
        if proxy_stats is None:
            direct_rate = rate
            line += f"{'':>7}"
        else:
            line += f"{rate / direct_rate:>7.2f}"
        line += f"{percentile(latencies, 50) * 1000:>8.1f}{percentile(latencies, 99) * 1000:>8.1f}"
        if proxy_stats is not None:
            cpu, rss, opened, describe_times = proxy_stats
            line += (f"{cpu * 1000:>11.2f}{rss / 2**20:>8.1f}{opened:>7}"
                     f"{percentile(describe_times, 50) * 1000:>13.2f}{percentile(describe_times, 99) * 1000:>8.2f}")  # fmt: skip
        print(line)


async def main() -> None:
    args = parse_args()
    upstream, url = await start_upstream(
        "--delay-ms", str(args.latency_ms), "--chunk-bytes", "16384", "--jitter", str(args.jitter)
    )  # fmt: skip
    ours = ("--tts-voices", "alloy", "--max-connections", "1000", "--stt-backend", "OPENAI", "--tts-backend", "OPENAI",
            "--workers", str(args.workers))  # fmt: skip
    theirs = ("--tts-voices", "alloy", "--stt-openai-key", KEY, "--tts-openai-key", KEY, "--stt-models",
              "gpt-4o-mini-transcribe", "--tts-models", "gpt-4o-mini-tts", "--stt-backend", "OPENAI", "--tts-backend",
              "OPENAI")  # fmt: skip
    proxies = await start_comparisons(upstream, url, args, ours, theirs)

    directions = [name for name in ("TTS", "STT") if args.only in (None, name)]
    probers = {(name, port): await start_describe_probe(port) for name in directions for _, _, port in proxies}
    if not args.equal_priority:
        # The load generator and the upstream stand in for other machines (satellites, a GPU server).
        # On a small machine they would starve the proxy and the prober of CPU, and the numbers would
        # be the scheduler's; at nice 10 they take what the proxy leaves, on both paths alike.
        os.setpriority(os.PRIO_PROCESS, upstream.pid, 10)
        os.nice(10)

    connector = aiohttp.TCPConnector(limit=args.clients)
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}, connector=connector)
    measure = Measurement(args, upstream, url, session)
    rows = []
    try:
        for name, direct_request, proxy_request in (
            ("TTS", measure.direct_tts, proxy_tts),
            ("STT", measure.direct_stt, functools.partial(proxy_stt, live=args.live)),
        ):
            if name not in directions:
                continue
            rows.append(await measure.direct_path(name, direct_request))
            for label, proxy, port in proxies:
                request = functools.partial(proxy_request, port)
                rows.append(await measure.proxy_path(name, label, proxy, request, probers[name, port]))
    finally:
        await session.close()
        await stop(*(proxy for _, proxy, _ in proxies), upstream)
    print_table(args, rows)


if __name__ == "__main__":
    run(main())
