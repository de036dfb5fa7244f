"""What the benchmarks share: the upstream stand-in and the proxy as processes, and percentiles."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def start_upstream(*flags: str) -> tuple[asyncio.subprocess.Process, str]:
    """The test suite's upstream stand-in in its own process; returns it and its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "upstream_server.py"), *flags, stdout=asyncio.subprocess.PIPE
    )
    port = int((await process.stdout.readline()).decode())  # type: ignore[union-attr]
    return process, f"http://127.0.0.1:{port}/v1"


async def start_proxy(
    upstream_url: str, *flags: str, python: str | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """The proxy in its own process, pointed at the upstream; returns once it accepts connections.

    ``python``: an interpreter with another wyoming_openai installed (an earlier release, to compare
    against); by default this checkout's package runs.
    """
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    if python is None:
        env["PYTHONPATH"] = str(ROOT / "app")
    process = await asyncio.create_subprocess_exec(
        python or sys.executable, "-m", "wyoming_openai", "--uri", f"tcp://127.0.0.1:{port}",
        "--stt-openai-url", upstream_url, "--tts-openai-url", upstream_url, "--log-level", "WARNING", *flags,
        env=env, cwd="/tmp",  # not the repository root, where the add-on folder shadows the package
    )  # fmt: skip
    for _ in range(400):
        if process.returncode is not None:
            raise RuntimeError(f"the proxy exited at start with code {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return process, port
        except OSError:
            await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError("the proxy did not start")


async def stop(*processes: asyncio.subprocess.Process) -> None:
    for process in processes:
        process.terminate()
        await process.wait()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed: the load generator and the upstream stand-in stand for
    other machines but share this one's CPU with the proxy, so the less they use, the less they
    distort what is measured. (Both paths, direct and proxied, get the same.)"""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def add_comparisons(parser: argparse.ArgumentParser) -> None:
    """--variant and --baseline: other proxies measured in the same run, side by side."""
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=FLAGS",
        help="also measure this checkout's proxy started with FLAGS, labelled NAME (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", action="append", default=[], metavar="NAME=PYTHON",
        help="also measure the wyoming_openai installed for another interpreter, labelled NAME (repeatable)",
    )  # fmt: skip


async def start_comparisons(
    upstream: asyncio.subprocess.Process,
    upstream_url: str,
    args: argparse.Namespace,
    ours: tuple[str, ...],
    baseline_flags: tuple[str, ...],
) -> list[tuple[str, asyncio.subprocess.Process, int]]:
    """(label, process, port) of this checkout's proxy started with ``ours`` (labelled "proxy"),
    then with each --variant's flags added, then of each --baseline started with ``baseline_flags``.
    If one cannot start, those started and the upstream are stopped: no process is left behind."""
    proxies = []
    try:
        for variant in ["proxy=", *args.variant]:
            label, _, flags = variant.partition("=")
            proxies.append((label, *await start_proxy(upstream_url, *ours, *flags.split())))
        for baseline in args.baseline:
            label, _, python = baseline.partition("=")
            proxies.append((label, *await start_proxy(upstream_url, *baseline_flags, python=python)))
    except BaseException:
        await stop(*(process for _, process, _ in proxies), upstream)
        raise
    return proxies


def check_comparisons(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before anything starts: a --baseline that is no interpreter would leave the run hanging."""
    for baseline in args.baseline:
        python = baseline.partition("=")[2]
        if not os.access(python, os.X_OK):
            parser.error(f"--baseline {baseline}: {python!r} is not an executable interpreter")
