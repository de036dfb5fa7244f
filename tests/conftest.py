"""Fixtures: a spec-checking upstream stand-in, the proxy in this loop, and the real wyoming client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import TEST_KEY  # noqa: E402
from upstream import FakeUpstream  # noqa: E402
from wyoming_openai.__main__ import Proxy  # noqa: E402
from wyoming_openai.settings import load_settings  # noqa: E402


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
