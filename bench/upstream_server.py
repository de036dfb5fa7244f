"""The test suite's upstream stand-in as its own process, for benchmarks: prints its port, serves until killed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import run  # noqa: E402
from upstream import FakeUpstream  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=20.0, help="time before the upstream answers")
    parser.add_argument("--jitter", type=float, default=0.0, help="each answer's delay varies by up to this fraction")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between body chunks")
    parser.add_argument("--chunk-bytes", type=int, default=4800)
    parser.add_argument("--transcript", default="turn on the living room lamp")
    args = parser.parse_args()
    server = FakeUpstream(key="bench-key")
    server.answer_delay = args.delay_ms / 1000
    server.answer_jitter = args.jitter
    server.chunk_delay = args.chunk_delay_ms / 1000
    server.chunk_bytes = args.chunk_bytes
    server.transcript = args.transcript
    server.record_bodies = False
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    run(main())
