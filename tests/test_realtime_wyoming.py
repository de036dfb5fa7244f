"""The Realtime API behind the proxy, driven by the real wyoming client as Home Assistant would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from audio_samples import tone
from harness import TEST_KEY, Client, proxy_port, until
from realtime_server import RealtimeServer
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_openai.__main__ import Proxy
from wyoming_openai.settings import load_settings


@pytest.fixture
async def proxy(realtime: RealtimeServer) -> AsyncIterator[Proxy]:
    settings = load_settings(
        ["--uri", "tcp://127.0.0.1:0", "--stt-realtime-models", "gpt-4o-transcribe", "--tts-realtime-models",
         "gpt-realtime", "--tts-voices", "marin", "--tts-streaming-models", "gpt-realtime", "--stt-backend", "OPENAI"],
        {"STT_OPENAI_URL": realtime.url, "TTS_OPENAI_URL": realtime.url, "OPENAI_API_KEY": TEST_KEY},
    )  # fmt: skip
    running = Proxy(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_info_advertises_streaming_for_realtime_models(proxy):
    async with Client(proxy_port(proxy)) as client:
        await client.send(Describe().event())
        info = Info.from_event(await client.read())
    assert info.asr[0].models[0].name == "gpt-4o-transcribe" and info.asr[0].supports_transcript_streaming
    assert info.tts[0].supports_synthesize_streaming


async def test_audio_reaches_the_api_while_the_user_speaks(proxy, realtime, caplog):
    caplog.set_level(logging.INFO)
    async with Client(proxy_port(proxy)) as client:
        await client.send(Transcribe(language="en-US").event(), AudioStart(rate=16000, width=2, channels=1).event())
        pcm = tone(1.0, 16000)
        for start in range(0, len(pcm), 3201):  # odd sizes, as Home Assistant may cut them
            await client.send(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[start : start + 3201]).event())
        # Before audio-stop, the API already holds (nearly) all of it.
        await until(lambda: realtime.connections and len(realtime.connections[0].audio) >= 0.9 * 48000)
        await client.send(AudioStop().event())
        events = await client.read_until("transcript")
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript-stop", "transcript"]
    assert Transcript.from_event(events[-1]).text == realtime.transcript
    # Recorded as one request, its audio counted.
    lines = [r.getMessage() for r in caplog.records if r.name == "wyoming_openai.monitor"]
    assert len(lines) == 1 and lines[0].startswith("STT gpt-4o-transcribe via primary: ok, transcript after ")
    assert lines[0].endswith(" 1.0 s of audio")
    billed = proxy.services.monitor.registry.get_sample_value(
        "wyoming_openai_transcribed_audio_seconds_total", {"upstream": "primary", "model": "gpt-4o-transcribe"}
    )
    assert billed == pytest.approx(1.0)
    session = realtime.connections[0].session
    assert session["audio"]["input"]["transcription"]["language"] == "en"
    assert abs(len(realtime.connections[0].committed) / 48000 - 1.0) < 0.01


async def test_speech_through_the_realtime_api(proxy, realtime):
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="The garage is closed.", voice=SynthesizeVoice(name="marin")).event())
        events = await client.read_until("audio-stop")
    assert events[0].type == "audio-start" and AudioStart.from_event(events[0]).rate == 24000
    assert realtime.connections[-1].spoken_text == "The garage is closed."


async def test_streamed_text_through_the_realtime_api(proxy, realtime):
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart(voice=SynthesizeVoice(name="marin")).event())
        for token in ["The garage", " is closed", ".", " Good", " night", "."]:
            await client.send(SynthesizeChunk(text=token).event())
        await client.send(SynthesizeStop().event())
        events = await client.read_until("synthesize-stopped")
    assert [e.type for e in events].count("audio-start") == 1
    assert [c.spoken_text for c in realtime.connections] == ["The garage is closed.", "Good night."]


async def test_a_client_that_leaves_closes_the_realtime_session(proxy, realtime):
    async with Client(proxy_port(proxy)) as client:
        await client.send(Transcribe(language="en").event(), AudioStart(rate=16000, width=2, channels=1).event())
        await client.send(AudioChunk(rate=16000, width=2, channels=1, audio=tone(0.2, 16000)).event())
        for _ in range(100):
            if realtime.connections:
                break
            await asyncio.sleep(0.02)
    for _ in range(100):
        if realtime.open_sockets == 0:
            break
        await asyncio.sleep(0.02)
    assert realtime.open_sockets == 0
