"""Fixtures: a spec-checking upstream stand-in, the proxy in this loop, and the real wyoming client."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import FALLBACK_KEY, FALLBACK_VOICES, TEST_KEY, TEST_SECRETS  # noqa: E402
from realtime_server import RealtimeServer  # noqa: E402
from upstream import FakeUpstream  # noqa: E402

from wyoming_openai.__main__ import Proxy  # noqa: E402
from wyoming_openai.settings import load_settings  # noqa: E402


class _RawRecords(logging.Handler):
    """Every record of the run, formatted without our redaction: secrets must never get this far."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(logging.Formatter().format(record))


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_record():
    handler = _RawRecords()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(1)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)
    everything = "\n".join(handler.texts)
    leaked = [secret for secret in TEST_SECRETS if secret in everything]
    assert not leaked, f"secrets reached log records: {leaked}"


async def serving(server: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    """The stand-in started for one test, then stopped; every request it took must follow the spec."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert not server.violations, f"requests broke the OpenAI spec: {server.violations}"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async for server in serving(FakeUpstream(key=TEST_KEY)):
        yield server


@pytest.fixture
async def fallback() -> AsyncIterator[FakeUpstream]:
    """A second stand-in, for the proxy's fallback upstream: a Kokoro-FastAPI with its own key."""
    server = FakeUpstream(key=FALLBACK_KEY, backend="KOKORO_FASTAPI", voices=FALLBACK_VOICES)
    server.transcript = "heard by the fallback"
    async for started in serving(server):
        yield started


@pytest.fixture
async def realtime() -> AsyncIterator[RealtimeServer]:
    """A local stand-in for the OpenAI Realtime API that checks every event it is sent."""
    server = RealtimeServer(key=TEST_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert not server.violations, f"events broke the Realtime API's rules: {server.violations}"


StartProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def start_proxy(upstream: FakeUpstream) -> AsyncIterator[StartProxy]:
    """start_proxy(*flags, env={...}) -> a running Proxy on a free port, pointed at ``upstream``."""
    started: list[Proxy] = []

    async def start(*flags: str, env: dict[str, str] | None = None, discovery: bool = True) -> Proxy:
        environ = {
            "STT_OPENAI_URL": upstream.url,
            "TTS_OPENAI_URL": upstream.url,
            "OPENAI_API_KEY": TEST_KEY,
            **(env or {}),
        }
        settings = load_settings(["--uri", "tcp://127.0.0.1:0", *flags], environ)
        proxy = Proxy(settings)
        await proxy.start()
        started.append(proxy)
        if discovery and proxy.discovery is not None:
            await asyncio.wait_for(asyncio.shield(proxy.discovery), 10)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            await proxy.stop()
