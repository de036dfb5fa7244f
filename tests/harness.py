"""Helpers for tests that talk to the proxy: the real wyoming client with time-outs, shared paths."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_read_event

from wyoming_openai.__main__ import Proxy

APP = Path(__file__).resolve().parents[1] / "app"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
TEST_KEY = "test-key-3f9a7c1e5b"
URL_PASSWORD = "hunter2-pass"
FALLBACK_KEY = "fallback-key-8d2e4a6c0b"  # the fallback stand-in's: a different key from the primary's
FALLBACK_VOICES = ["af_heart", "bf_emma"]
# Every credential the tests hand the proxy: none may reach a log record, at any level.
TEST_SECRETS = (
    TEST_KEY, URL_PASSWORD, "test-wrong-key-0123456789", "stt-key-value", "tts-key-value",
    # the add-on's tests (tests/addon)
    "test-key-not-real-stt-7f3a", "test-key-not-real-tts-9c1d", "test-key-not-real-e2e-5b8e", "supervisor-token-not-real",
    "test-api-key-not-real-4b8e", "test-api-key-not-real-d27a",
    # fallback upstreams (tests/test_failover.py, tests/test_settings.py)
    FALLBACK_KEY, "stt-fallback-key-value", "tts-fallback-key-value", "fb-pass", "test-key-not-real-fallback-3e6b",
)  # fmt: skip


def chunks_of(pcm: bytes, sizes: list[int], rate: int = 16000, width: int = 2, channels: int = 1) -> list[Event]:
    """AudioChunk events cutting ``pcm`` at the given sizes in turn (odd sizes split samples)."""
    events, start, i = [], 0, 0
    while start < len(pcm):
        size = sizes[i % len(sizes)]
        events.append(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[start : start + size]).event())
        start += size
        i += 1
    return events


def utterance(pcm: bytes, sizes=(1024,), *, rate=16000, width=2, channels=1, language="en", name=None) -> list[Event]:
    """One utterance as Home Assistant sends it: transcribe, audio-start, the chunks, audio-stop."""
    return [
        Transcribe(language=language, name=name).event(),
        AudioStart(rate=rate, width=width, channels=channels).event(),
        *chunks_of(pcm, list(sizes), rate, width, channels),
        AudioStop().event(),
    ]


def reference_file(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside this checkout)")
    return path


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


async def read_events(reader: asyncio.StreamReader, until: str) -> list[Event]:
    """Events from a raw stream up to and including the first of type ``until``."""
    events: list[Event] = []
    while not events or events[-1].type != until:
        event = await asyncio.wait_for(async_read_event(reader), 10)
        assert event is not None, f"closed before {until}: {[e.type for e in events]}"
        events.append(event)
    return events


def keep_busy(seconds: float = 0.3) -> None:
    """Block this loop, which in these tests is also the server's, as a burst of work would: a client
    that connects meanwhile waits in the accept queue."""
    time.sleep(seconds)


async def connect_while_busy(
    port: int, first: bytes, seconds: float = 0.3
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that connects and sends ``first`` while the serving process is busy for ``seconds``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)  # blocking: the loop cannot accept
    sock.sendall(first)
    keep_busy(seconds)
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock)


async def until(condition, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, looking again every 10 ms; a time-out fails the test."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def proxy_port(proxy: Proxy) -> int:
    assert proxy.server is not None and proxy.server.port is not None
    return proxy.server.port
