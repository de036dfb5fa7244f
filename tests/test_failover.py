"""The fallback upstream and the circuit breaker, through the real wyoming client and two stand-ins:
the primary (``upstream``, failing as told) and the fallback (its own key, a Kokoro-FastAPI)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import aiohttp
import pytest
from audio_samples import tone
from harness import FALLBACK_KEY, FALLBACK_VOICES, TEST_KEY, URL_PASSWORD, Client, proxy_port
from test_streaming import SENTENCES, stream_session, tokens
from upstream import FakeUpstream, Fault
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.tts import Synthesize

from wyoming_openai import failover

FALLBACK_STT_MODEL = "Systran/faster-whisper-small"
FALLBACK_TTS_MODEL = "kokoro"
# Short time-outs, so a hanging primary costs the test half a second.
FAST = ("--upstream-timeout", "0.5", "--upstream-read-timeout", "0.5", "--upstream-connect-timeout", "0.5")


def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fallback_env(fallback: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "STT_FALLBACK_URL": fallback.url,
        "STT_FALLBACK_KEY": FALLBACK_KEY,
        "STT_FALLBACK_MODEL": FALLBACK_STT_MODEL,
        "TTS_FALLBACK_URL": fallback.url,
        "TTS_FALLBACK_KEY": FALLBACK_KEY,
        "TTS_FALLBACK_MODEL": FALLBACK_TTS_MODEL,
        **extra,
    }


def stt_events(seconds: float = 0.3) -> list:
    return [
        Transcribe(language="en").event(),
        AudioStart(rate=16000, width=2, channels=1).event(),
        AudioChunk(rate=16000, width=2, channels=1, audio=tone(seconds, 16000)).event(),
        AudioStop().event(),
    ]


async def transcribe(port: int) -> str:
    async with Client(port) as client:
        await client.send(*stt_events())
        events = await client.read_until("transcript")
    return events[-1].data["text"]


async def speak(port: int, text: str = "Hello there.") -> list:
    async with Client(port) as client:
        await client.send(Synthesize(text=text).event())
        return await client.read_until("audio-stop")


def speech_requests(server: FakeUpstream) -> list:
    return [r for r in server.requests if r.path == "/audio/speech"]


def transcription_requests(server: FakeUpstream) -> list:
    return [r for r in server.requests if r.path == "/audio/transcriptions"]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for something the proxy does in the background (a probe, a state change)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def request_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wyoming_openai.monitor" and r.levelno == logging.INFO]


# How the primary fails, and the kind of failure the request log names.
FAULTS = {
    "refused": (None, "unreachable"),
    "500": (Fault(status=500, message="internal error"), "server_error"),
    "503": (Fault(status=503, message="overloaded"), "server_error"),
    "hanging": (Fault(silent=True), "timeout"),
    "429-long-wait": (Fault(status=429, message="Rate limit reached", retry_after="3600"), "rate_limited"),
}


async def start_failing(start_proxy, upstream, fallback, case: str, *flags: str, faults: str = "speech", **env):
    fault, _ = FAULTS[case]
    environ = fallback_env(fallback, **env)
    if fault is None:
        refused = f"http://127.0.0.1:{closed_port()}/v1"
        environ.update(STT_OPENAI_URL=refused, TTS_OPENAI_URL=refused)
    else:
        getattr(upstream, f"{faults}_faults").append(fault)
    return await start_proxy(*FAST, *flags, env=environ)


# --- one request ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FAULTS)
async def test_tts_is_answered_by_the_fallback(start_proxy, upstream, fallback, case, caplog):
    caplog.set_level(logging.INFO)
    proxy = await start_failing(start_proxy, upstream, fallback, case)
    events = await speak(proxy_port(proxy), "Hello there.")

    assert [e.type for e in events][0] == "audio-start" and events[-1].type == "audio-stop"
    (asked,) = speech_requests(fallback)
    # The fallback's model and, as the primary's voice is not among its own, its first voice; its key.
    assert asked.json["model"] == FALLBACK_TTS_MODEL and asked.json["voice"] == FALLBACK_VOICES[0]
    assert asked.headers["Authorization"] == f"Bearer {FALLBACK_KEY}"
    assert asked.json["input"] == "Hello there."
    if case != "refused":
        assert speech_requests(upstream), "the primary was asked first"
    (line,) = request_lines(caplog)  # one line for the request, naming the route it took
    assert line.startswith(
        f"TTS {FALLBACK_TTS_MODEL}/{FALLBACK_VOICES[0]} via fallback (primary: {FAULTS[case][1]}): ok"
    )
    assert line.endswith("12 characters")


@pytest.mark.parametrize("case", FAULTS)
async def test_stt_is_answered_by_the_fallback(start_proxy, upstream, fallback, case, caplog):
    caplog.set_level(logging.INFO)
    proxy = await start_failing(start_proxy, upstream, fallback, case, faults="transcription")

    assert await transcribe(proxy_port(proxy)) == "heard by the fallback"
    (asked,) = transcription_requests(fallback)
    assert asked.fields["model"] == FALLBACK_STT_MODEL
    assert asked.headers["Authorization"] == f"Bearer {FALLBACK_KEY}"
    (line,) = request_lines(caplog)
    assert line.startswith(f"STT {FALLBACK_STT_MODEL} via fallback (primary: {FAULTS[case][1]}): ok")
    assert line.endswith("0.3 s of audio")


async def test_streamed_stt_falls_back_too(start_proxy, upstream, fallback):
    upstream.transcription_faults.append(Fault(status=502))
    proxy = await start_proxy(*FAST, "--stt-streaming-models", "gpt-4o-mini-transcribe", env=fallback_env(fallback))
    async with Client(proxy_port(proxy)) as client:
        await client.send(*stt_events())
        events = await client.read_until("transcript")
    assert events[-1].data["text"] == "heard by the fallback"
    assert [e.type for e in events][0] == "transcript-start"
    assert transcription_requests(fallback)[0].fields["stream"] == "true"


async def test_configured_fallback_voice_is_used(start_proxy, upstream, fallback):
    proxy = await start_failing(start_proxy, upstream, fallback, "503", TTS_FALLBACK_VOICE="bf_emma")
    await speak(proxy_port(proxy))
    assert speech_requests(fallback)[0].json["voice"] == "bf_emma"


async def test_a_voice_the_fallback_has_is_kept(start_proxy, upstream, fallback):
    proxy = await start_failing(start_proxy, upstream, fallback, "503", TTS_VOICES="bf_emma alloy")
    await speak(proxy_port(proxy))
    assert speech_requests(upstream)[0].json["voice"] == "bf_emma"
    assert speech_requests(fallback)[0].json["voice"] == "bf_emma"


async def test_a_request_the_primary_refuses_is_not_sent_elsewhere(start_proxy, upstream, fallback):
    """A 400/401/404 is about the request or the settings: the user has to see it, not a fallback."""
    upstream.speech_faults.append(Fault(status=401, message="Incorrect API key provided"))
    proxy = await start_proxy(*FAST, env=fallback_env(fallback))
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="Hello.").event())
        event = await client.read()
    assert event.type == "error" and "401" in event.data["text"]
    assert not speech_requests(fallback)


async def test_both_failing_reports_the_fallbacks_failure(start_proxy, upstream, fallback, caplog):
    caplog.set_level(logging.INFO)
    upstream.speech_faults.append(Fault(status=500))
    fallback.speech_faults.append(Fault(status=503, message="fallback overloaded too"))
    proxy = await start_proxy(*FAST, "--upstream-retries", "0", env=fallback_env(fallback))
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="Hello.").event())
        event = await client.read()
    assert event.type == "error"
    assert "fallback overloaded too" in event.data["text"] and fallback.url.removesuffix("/v1") in event.data["text"]
    (line,) = request_lines(caplog)
    assert line.startswith("TTS kokoro/af_heart via fallback (primary: server_error): server_error, ")
    assert line.endswith(" 6 characters")


async def test_audio_already_sent_is_not_repeated_by_the_fallback(start_proxy, upstream, fallback):
    """A body that breaks off after audio went out ends in an error: restarting elsewhere would
    speak the start twice."""
    upstream.speech_faults.append(Fault(truncate=True))
    proxy = await start_proxy("--upstream-read-timeout", "1", env=fallback_env(fallback))
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="A sentence long enough to be sent in several chunks.").event())
        received = []
        while (event := await client.read()) is not None:
            received.append(event.type)
    assert "audio-chunk" in received and received[-1] == "error"
    assert not speech_requests(fallback)


# --- streamed speech ---------------------------------------------------------------------------


async def test_streamed_speech_moves_to_the_fallback_and_stays(start_proxy, upstream, fallback, caplog):
    """The first sentence from the primary, the second fails there: it and every later one are
    spoken by the fallback, in order, and the request is one line in the log."""
    caplog.set_level(logging.INFO)
    upstream.speech_faults += [Fault(times=1), Fault(status=503)]
    proxy = await start_proxy(
        *FAST, "--tts-streaming-models", "gpt-4o-mini-tts", "--tts-concurrent-requests", "1",
        "--upstream-retries", "0", env=fallback_env(fallback),
    )  # fmt: skip
    async with Client(proxy_port(proxy)) as client:
        events = await stream_session(client, tokens(" ".join(SENTENCES)))

    assert "error" not in [e.type for e in events]
    assert events[-2].type == "audio-stop" and events[-1].type == "synthesize-stopped"
    assert [r.json["input"] for r in speech_requests(upstream)] == SENTENCES[:2]
    assert [r.json["input"] for r in speech_requests(fallback)] == SENTENCES[1:]
    (line,) = request_lines(caplog)
    characters = sum(len(s) for s in SENTENCES)
    assert line.startswith(
        f"TTS {FALLBACK_TTS_MODEL}/{FALLBACK_VOICES[0]} via primary+fallback (primary: server_error): ok"
    )
    assert line.endswith(f"{characters} characters")


@pytest.mark.parametrize("case", ["refused", "hanging", "429-long-wait"])
async def test_streamed_speech_with_the_primary_down_is_spoken_by_the_fallback(start_proxy, upstream, fallback, case):
    proxy = await start_failing(start_proxy, upstream, fallback, case, "--tts-streaming-models", "gpt-4o-mini-tts")
    async with Client(proxy_port(proxy)) as client:
        events = await stream_session(client, tokens(" ".join(SENTENCES)))
    assert "error" not in [e.type for e in events] and events[-1].type == "synthesize-stopped"
    assert sorted(r.json["input"] for r in speech_requests(fallback)) == sorted(SENTENCES)


# --- the breaker ---------------------------------------------------------------------------------


@pytest.fixture
def short_cooldown(monkeypatch):
    monkeypatch.setattr(failover, "FIRST_COOLDOWN", 0.3)
    monkeypatch.setattr(failover, "LONGEST_COOLDOWN", 1.2)


async def test_breaker_opens_probes_and_closes(start_proxy, upstream, fallback, short_cooldown, caplog):
    caplog.set_level(logging.INFO)
    upstream.unavailable = True  # 503 for everything, the probe's model list included
    proxy = await start_proxy(*FAST, "--upstream-retries", "0", env=fallback_env(fallback))
    port = proxy_port(proxy)
    breaker = proxy.services.synthesizer.route.primary.breaker

    for _ in range(failover.FAILURES_TO_OPEN):  # each tries the primary first
        await speak(port)
    assert len(speech_requests(upstream)) == failover.FAILURES_TO_OPEN and breaker.is_open

    # Open: the primary gets only the probe; the fallback answers at once.
    for _ in range(3):
        await speak(port)
    assert len(speech_requests(upstream)) == failover.FAILURES_TO_OPEN
    assert len(speech_requests(fallback)) == failover.FAILURES_TO_OPEN + 3
    await until(lambda: upstream.model_listings >= 2)  # probed, still failing: a longer cool-down
    assert breaker.is_open and breaker.cooldown > failover.FIRST_COOLDOWN

    upstream.unavailable = False
    await until(lambda: not breaker.is_open)
    await speak(port)
    assert len(speech_requests(upstream)) == failover.FAILURES_TO_OPEN + 1  # traffic is back
    assert len(speech_requests(fallback)) == failover.FAILURES_TO_OPEN + 3
    assert speech_requests(upstream)[-1].headers["Authorization"] == f"Bearer {TEST_KEY}"

    messages = [r.getMessage() for r in caplog.records if r.name == "wyoming_openai.failover"]
    assert len([m for m in messages if "skipping it" in m]) == 1, messages  # the switch, once
    assert len([m for m in messages if "traffic returns to it" in m]) == 1, messages
    assert breaker.cooldown == failover.FIRST_COOLDOWN  # a success ends the doubling


async def test_after_recovery_one_failure_skips_it_again(start_proxy, upstream, fallback, short_cooldown):
    upstream.unavailable = True
    proxy = await start_proxy(*FAST, "--upstream-retries", "0", env=fallback_env(fallback))
    breaker = proxy.services.transcriber.route.primary.breaker
    for _ in range(failover.FAILURES_TO_OPEN):
        assert await transcribe(proxy_port(proxy)) == "heard by the fallback"
    assert breaker.is_open
    upstream.unavailable = False
    await until(lambda: not breaker.is_open)

    upstream.transcription_faults.append(Fault(status=500, times=1))
    assert await transcribe(proxy_port(proxy)) == "heard by the fallback"
    assert breaker.is_open and breaker.cooldown == 2 * failover.FIRST_COOLDOWN


async def test_a_refusing_primary_that_comes_back_gets_the_traffic_again(start_proxy, fallback, short_cooldown):
    """Nothing listens on the primary's port; then a server starts there."""
    port = closed_port()
    refused = f"http://127.0.0.1:{port}/v1"
    proxy = await start_proxy(*FAST, env=fallback_env(fallback, TTS_OPENAI_URL=refused, STT_OPENAI_URL=refused))
    breaker = proxy.services.synthesizer.route.primary.breaker
    for _ in range(failover.FAILURES_TO_OPEN):
        await speak(proxy_port(proxy))
    assert breaker.is_open

    revived = FakeUpstream(key=TEST_KEY)
    await revived.start(port)
    try:
        await until(lambda: not breaker.is_open)
        await speak(proxy_port(proxy))
        assert len(speech_requests(revived)) == 1
    finally:
        await revived.stop()
    assert len(speech_requests(fallback)) == failover.FAILURES_TO_OPEN


async def test_a_hanging_primary_is_waited_for_only_until_the_breaker_opens(start_proxy, upstream, fallback):
    upstream.speech_faults.append(Fault(silent=True))
    proxy = await start_proxy(*FAST, env=fallback_env(fallback))
    for _ in range(failover.FAILURES_TO_OPEN + 2):
        await speak(proxy_port(proxy))
    assert upstream.cancelled == failover.FAILURES_TO_OPEN  # each of those timed out; the rest never went
    assert len(speech_requests(fallback)) == failover.FAILURES_TO_OPEN + 2


# --- secrets -------------------------------------------------------------------------------------


async def test_no_key_of_either_upstream_on_the_pages(start_proxy, upstream, fallback):
    credentialed = fallback.url.replace("http://", f"http://user:{URL_PASSWORD}@")
    env = fallback_env(fallback, TTS_FALLBACK_URL=credentialed, STT_FALLBACK_URL=credentialed)
    upstream.unavailable = True
    proxy = await start_proxy(*FAST, "--http-port", "0", "--upstream-retries", "0", env=env)
    for _ in range(failover.FAILURES_TO_OPEN):
        await speak(proxy_port(proxy))
        await transcribe(proxy_port(proxy))
    async with aiohttp.ClientSession() as session:
        pages = []
        for path in ("", "health", "metrics", "status.json", "app.js"):
            async with session.get(f"http://127.0.0.1:{proxy.http.port}/{path}") as response:
                pages.append(await response.text())
    everything = "\n".join(pages)
    assert "http://***@127.0.0.1" in everything  # the fallback's URL is shown, redacted
    for secret in (TEST_KEY, FALLBACK_KEY, URL_PASSWORD):
        assert secret not in everything


async def test_a_long_retry_after_skips_the_primary_at_once(start_proxy, upstream, fallback):
    """A 429 that says how long to stay away (UpstreamError.retry_after, read by upstream.py) opens
    the breaker for that long, at most 5 minutes, without waiting for three failures."""
    proxy = await start_proxy(*FAST, env=fallback_env(fallback))
    breaker = proxy.services.synthesizer.route.primary.breaker
    rate_limited = failover.UpstreamError("TTS upstream answered 429 Too Many Requests", status=429)
    rate_limited.retry_after = 3600.0
    breaker.failed(str(rate_limited), failover.requested_wait(rate_limited))
    assert breaker.is_open and breaker.cooldown == failover.LONGEST_COOLDOWN
    await speak(proxy_port(proxy))
    assert not speech_requests(upstream) and len(speech_requests(fallback)) == 1


async def test_a_streamed_transcript_is_recorded_once_as_answered(start_proxy, upstream, caplog):
    """The handler stops reading at the final transcript: that is the answer, not a cancellation."""
    caplog.set_level(logging.INFO)
    proxy = await start_proxy("--stt-streaming-models", "gpt-4o-mini-transcribe")
    async with Client(proxy_port(proxy)) as client:
        await client.send(*stt_events())
        await client.read_until("transcript")
    (line,) = request_lines(caplog)
    assert line.startswith("STT gpt-4o-mini-transcribe via primary: ok, transcript after ")
    billed = proxy.services.monitor.registry.get_sample_value(
        "wyoming_openai_transcribed_audio_seconds_total", {"upstream": "primary", "model": "gpt-4o-mini-transcribe"}
    )
    assert billed == 0.3


async def test_the_fallback_has_the_same_rate_limit_patience(start_proxy, upstream, fallback):
    """The fallback is an upstream like the primary: --upstream-retry-after-max 0 (never wait) holds
    for it too, and its 429 reaches the user at once, saying so."""
    fallback.speech_faults.append(Fault(status=429, message="Rate limit reached", retry_after="1", times=1))
    proxy = await start_proxy(
        "--tts-openai-url", f"http://127.0.0.1:{closed_port()}/v1", "--upstream-retry-after-max", "0",
        env=fallback_env(fallback),
    )  # fmt: skip
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="Hello there.").event())
        error = await client.read()
    assert error.type == "error" and "rate limited" in error.data["text"]
    assert len(speech_requests(fallback)) == 1
