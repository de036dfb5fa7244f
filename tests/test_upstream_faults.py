"""Upstream failures: the client gets an error naming what happened, then a closed connection, in bounded time."""

from __future__ import annotations

import asyncio
import time

import pytest
from audio_samples import tone
from harness import TEST_KEY, Client, proxy_port
from upstream import Fault
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.tts import Synthesize

FAST = ("--upstream-timeout", "1.5", "--upstream-read-timeout", "0.5", "--upstream-connect-timeout", "0.5")


def stt_events():
    return [
        Transcribe(language="en").event(),
        AudioStart(rate=16000, width=2, channels=1).event(),
        AudioChunk(rate=16000, width=2, channels=1, audio=tone(0.3, 16000)).event(),
        AudioStop().event(),
    ]


async def expect_error_then_close(port: int, events, limit: float = 5.0) -> str:
    began = time.monotonic()
    async with Client(port) as client:
        await client.send(*events)
        received = []
        while True:
            event = await client.read(timeout=limit)
            if event is None:
                break
            received.append(event)
    assert time.monotonic() - began < limit
    errors = [e for e in received if e.type == "error"]
    assert len(errors) == 1 and received[-1].type == "error", [e.type for e in received]
    return errors[0].data["text"]


async def still_works(port: int) -> None:
    async with Client(port) as client:
        await client.send(Synthesize(text="Still here.").event())
        await client.read_until("audio-stop")


FAULTS = [
    (Fault(status=401, message="Incorrect API key provided"), ["401", "Incorrect API key provided"]),
    (Fault(status=404, message="The model `nope` does not exist"), ["404", "does not exist"]),
    (Fault(status=429, message="Rate limit reached", retry_after="7"), ["429", "retry after 7 s"]),
    (Fault(status=500, message="boom"), ["500", "boom"]),
    (Fault(silent=True), ["did not answer in time"]),
    (Fault(close_connection=True), ["closed the connection"]),
]


@pytest.mark.parametrize(("fault", "words"), FAULTS, ids=lambda f: getattr(f, "status", None) or "")
async def test_tts_faults(start_proxy, upstream, fault, words):
    upstream.speech_faults.append(Fault(**{**fault.__dict__, "times": 2}))
    proxy = await start_proxy(*FAST, "--upstream-retries", "0")
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello there.").event()])
    for word in words:
        assert word in text
    assert upstream.url.removesuffix("/v1") in text  # which upstream
    assert TEST_KEY not in text
    upstream.speech_faults.clear()
    await still_works(proxy_port(proxy))


@pytest.mark.parametrize(("fault", "words"), FAULTS, ids=lambda f: getattr(f, "status", None) or "")
async def test_stt_faults(start_proxy, upstream, fault, words):
    upstream.transcription_faults.append(Fault(**{**fault.__dict__, "times": 2}))
    proxy = await start_proxy(*FAST, "--upstream-retries", "0")
    text = await expect_error_then_close(proxy_port(proxy), stt_events())
    for word in words:
        assert word in text
    assert TEST_KEY not in text


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault(drip_interval=0.05), ["did not answer in time"]),  # never silent, never done
        (Fault(truncate=True), ["truncated"]),
        (Fault(body=b'{"error": "this is not audio"}'), ["instead of audio", "this is not audio"]),
        (Fault(body=b"RIFF\x10\x00\x00\x00WAVEjunk"), ["WAV that ends inside its header"]),
    ],
    ids=["slow-drip", "truncated", "json-not-audio", "broken-wav"],
)
async def test_tts_body_faults(start_proxy, upstream, fault, words):
    upstream.speech_faults.append(fault)
    proxy = await start_proxy("--upstream-timeout", "0.2", "--upstream-read-timeout", "1")
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello there, how are you?").event()], 8)
    for word in words:
        assert word in text
    assert upstream.url in text


async def test_mp3_that_is_not_mp3(start_proxy, upstream):
    upstream.speech_faults.append(Fault(body=b"<html>Bad gateway</html>" * 50))
    proxy = await start_proxy("--tts-response-format", "mp3")
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello.").event()])
    assert "<html>Bad gateway" in text and "instead of audio" in text


async def test_refused_connection(start_proxy, upstream):
    proxy = await start_proxy(*FAST, env={"TTS_OPENAI_URL": "http://127.0.0.1:9/v1"})
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello.").event()])
    assert "refused or unreachable" in text and "127.0.0.1:9" in text


async def test_unresolvable_host(start_proxy):
    proxy = await start_proxy(*FAST, env={"TTS_OPENAI_URL": "http://no-such-host.invalid/v1"}, discovery=False)
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello.").event()])
    assert "no-such-host.invalid" in text


async def test_one_retry_hides_a_passing_503(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=503, times=1))
    proxy = await start_proxy()
    await still_works(proxy_port(proxy))
    assert len([r for r in upstream.requests if r.path == "/audio/speech"]) == 2


async def test_wrong_key_is_reported_without_the_key(start_proxy, upstream):
    proxy = await start_proxy(env={"OPENAI_API_KEY": "test-wrong-key-0123456789"})
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello.").event()])
    assert "401" in text and "test-wrong-key-0123456789" not in text


async def test_client_disconnect_mid_speech_releases_the_upstream(start_proxy, upstream):
    upstream.chunk_bytes = 2400
    upstream.chunk_delay = 0.2
    proxy = await start_proxy("--tts-response-format", "pcm")
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="x" * 200).event())
        await client.read()
        await client.read()
    assert proxy.server is not None
    await asyncio.wait(list(proxy.server.handlers.values()), timeout=5)  # each ends when its client has gone
    assert not proxy.server.handlers
    await still_works(proxy_port(proxy))


async def test_an_upstream_that_echoes_the_key_does_not_leak_it(start_proxy, upstream, caplog):
    caplog.set_level(5)
    upstream.speech_faults.append(Fault(status=401, message=f"Incorrect API key provided: {TEST_KEY}"))
    proxy = await start_proxy()
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text="Hello.").event()])
    assert "Incorrect API key provided: ***" in text
    assert TEST_KEY not in caplog.text
