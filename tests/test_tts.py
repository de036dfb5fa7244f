"""Text to speech: every upstream audio format reaches the client as truthful 16-bit PCM."""

from __future__ import annotations

import asyncio

import pytest
from audio_samples import encode, tone, wav
from harness import Client, proxy_port
from upstream import PCM_RATE, SECONDS_PER_CHARACTER
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice


async def speak(port: int, text: str, voice: str | None = None) -> tuple[AudioStart, list[AudioChunk], list]:
    async with Client(port) as client:
        await client.send(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        events = await client.read_until("audio-stop")
    start = AudioStart.from_event(events[0])
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
    return start, chunks, events


def assert_truthful(start: AudioStart, chunks: list[AudioChunk]) -> float:
    """Every chunk matches audio-start, holds whole frames; returns the duration in seconds."""
    assert start.width == 2
    for chunk in chunks:
        assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, start.width, start.channels)
        assert len(chunk.audio) % (chunk.width * chunk.channels) == 0
    return sum(len(c.audio) for c in chunks) / (start.rate * start.width * start.channels)


TEXT = "The living room lamp is now on."


@pytest.mark.parametrize("response_format", ["wav", "pcm", "mp3", "flac", "opus", "aac"])
async def test_each_upstream_format_becomes_pcm(start_proxy, upstream, response_format):
    proxy = await start_proxy("--tts-response-format", response_format)
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    seconds = assert_truthful(start, chunks)
    expected = len(TEXT) * SECONDS_PER_CHARACTER
    assert start.channels == 1
    assert start.rate == (48000 if response_format == "opus" else PCM_RATE)
    assert abs(seconds - expected) < 0.08, (seconds, expected)  # codec padding is a few ms
    assert upstream.requests[-1].json["response_format"] == response_format


@pytest.mark.parametrize(
    ("kind", "rate", "channels"),
    [("wav_f32", 22050, 1), ("wav_s24", 44100, 1), ("wav_s32", 16000, 1), ("wav_s16", 24000, 2)],
)
async def test_unusual_wav_is_converted(start_proxy, upstream, kind, rate, channels):
    upstream.speech_override = ("wav", encode(kind, tone(0.5, rate, channels=channels), rate, channels))
    proxy = await start_proxy()
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert (start.rate, start.channels) == (rate, 1)
    assert abs(assert_truthful(start, chunks) - 0.5) < 0.01


async def test_fixed_output_rate_resamples(start_proxy, upstream):
    proxy = await start_proxy("--tts-sample-rate", "16000", "--tts-response-format", "mp3")
    start, chunks, events = await speak(proxy_port(proxy), TEXT)
    assert start.rate == 16000
    assert abs(assert_truthful(start, chunks) - len(TEXT) * SECONDS_PER_CHARACTER) < 0.08
    # Timestamps count frames, so they agree with the audio sent.
    stop = AudioStop.from_event(events[-1])
    assert stop.timestamp == sum(len(c.audio) // 2 for c in chunks) * 1000 // 16000


async def test_audio_streams_before_the_body_is_complete(start_proxy, upstream):
    upstream.chunk_bytes = 4800
    upstream.chunk_delay = 0.3
    proxy = await start_proxy("--tts-response-format", "pcm")
    async with Client(proxy_port(proxy)) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await client.send(Synthesize(text="x" * 100).event())  # 2 s of audio in 20 pieces, 6 s in all
        first = await client.read()
        second = await client.read()
        assert first.type == "audio-start" and second.type == "audio-chunk"
        assert loop.time() - began < 1.0


async def test_voice_speed_instructions_and_extra_body(start_proxy, upstream):
    upstream.allowed_extra_fields = {"lang_code"}
    proxy = await start_proxy(
        "--tts-voices", "nova", "coral", "--tts-speed", "1.5", "--tts-instructions", "Speak calmly.",
        env={"TTS_EXTRA_BODY": '{"lang_code": "en"}'},
    )  # fmt: skip
    await speak(proxy_port(proxy), TEXT, voice="coral")
    body = upstream.requests[-1].json
    assert body == {
        "model": "gpt-4o-mini-tts", "input": TEXT, "voice": "coral", "response_format": "wav",
        "speed": 1.5, "instructions": "Speak calmly.", "lang_code": "en",
    }  # fmt: skip


async def test_unknown_voice_falls_back_to_the_default(start_proxy, upstream, caplog):
    proxy = await start_proxy("--tts-voices", "nova", "coral")
    await speak(proxy_port(proxy), TEXT, voice="nobody")
    assert upstream.requests[-1].json["voice"] == "nova"
    assert "Unknown voice 'nobody'" in caplog.text


async def test_tts1_gets_no_instructions(start_proxy, upstream):
    proxy = await start_proxy("--tts-models", "tts-1", "--tts-instructions", "Whisper.")
    await speak(proxy_port(proxy), TEXT)
    assert "instructions" not in upstream.requests[-1].json


async def test_streaming_session_speaks_the_chunks_and_ignores_the_duplicate(start_proxy, upstream):
    proxy = await start_proxy("--tts-streaming-models", "gpt-4o-mini-tts")
    words = ["The ", "lamp ", "is ", "on. ", "Good ", "night."]
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart(voice=SynthesizeVoice(name="echo")).event())
        await client.send(*(SynthesizeChunk(text=w).event() for w in words))
        await client.send(Synthesize(text="".join(words), voice=SynthesizeVoice(name="echo")).event())
        await client.send(SynthesizeStop().event())
        events = await client.read_until("synthesize-stopped")
    kinds = [e.type for e in events]
    assert kinds[0] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    spoken = " ".join(r.json["input"] for r in upstream.requests).split()
    assert spoken == "".join(words).split()  # every word once: the duplicate synthesize was ignored
    assert all(r.json["voice"] == "echo" for r in upstream.requests)


async def test_empty_streaming_session_just_stops(start_proxy, upstream):
    proxy = await start_proxy("--tts-streaming-models", "gpt-4o-mini-tts")
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart().event(), SynthesizeStop().event())
        events = await client.read_until("synthesize-stopped")
    assert [e.type for e in events] == ["synthesize-stopped"]
    assert not upstream.requests


async def test_raw_pcm_rate_is_configurable(start_proxy, upstream):
    upstream.speech_override = ("pcm", tone(0.5, 22050))
    proxy = await start_proxy("--tts-response-format", "pcm", "--tts-pcm-sample-rate", "22050")
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert start.rate == 22050 and abs(assert_truthful(start, chunks) - 0.5) < 0.001


async def test_wav_with_unknown_length_streams(start_proxy, upstream):
    body = bytearray(wav(tone(0.5, 24000), 24000))
    body[4:8] = b"\xff\xff\xff\xff"  # streaming servers cannot know the sizes up front
    body[40:44] = b"\xff\xff\xff\xff"
    upstream.speech_override = ("wav", bytes(body))
    proxy = await start_proxy()
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert abs(assert_truthful(start, chunks) - 0.5) < 0.001


async def test_upstream_connections_are_pooled(start_proxy, upstream):
    proxy = await start_proxy()  # one server for STT and TTS, probed once at three endpoints at once
    after_discovery = len(upstream.peers)
    assert 1 <= after_discovery <= 3
    for _ in range(10):
        await speak(proxy_port(proxy), TEXT)
    assert len(upstream.peers) == after_discovery  # the kept-alive connections carried them all

    async def client() -> None:
        for _ in range(3):
            await speak(proxy_port(proxy), TEXT)

    await asyncio.gather(*(client() for _ in range(5)))
    assert len(upstream.peers) <= max(5, after_discovery)  # never more connections than clients at once
