"""Fixtures: a spec-checking upstream stand-in, the proxy in this loop, and the real wyoming client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

sys.path.insert(0, str(Path(__file__).parent))

from upstream import FakeUpstream  # noqa: E402
from wyoming_openai.__main__ import Proxy  # noqa: E402
from wyoming_openai.settings import load_settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
TEST_KEY = "test-key-3f9a7c1e5b"


def reference_file(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside this checkout)")
    return path


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream(key=TEST_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert not server.violations, f"requests broke the OpenAI spec: {server.violations}"


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


class Client:
    """The wyoming library's TCP client, with a read time-out so a hang fails the test."""

    def __init__(self, port: int) -> None:
        self._client = AsyncTcpClient("127.0.0.1", port)

    async def __aenter__(self) -> Client:
        await self._client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.disconnect()

    async def send(self, *events: Event) -> None:
        for event in events:
            await self._client.write_event(event)

    async def read(self, timeout: float = 10.0) -> Event | None:
        return await asyncio.wait_for(self._client.read_event(), timeout)

    async def read_until(self, event_type: str, timeout: float = 10.0) -> list[Event]:
        """Events up to and including the first of ``event_type``; fails on error or close."""
        events: list[Event] = []
        while True:
            event = await self.read(timeout)
            assert event is not None, f"connection closed before {event_type}; got {[e.type for e in events]}"
            events.append(event)
            if event.type == event_type:
                return events
            assert event.type != "error", f"error instead of {event_type}: {event.data}"


def proxy_port(proxy: Proxy) -> int:
    assert proxy.server is not None and proxy.server.port is not None
    return proxy.server.port
