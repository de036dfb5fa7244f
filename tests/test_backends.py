"""Every real backend, as its profile in the stand-in reproduces it, through the real proxy and the wyoming client.

Each profile is run through speech-to-text (where the server has it), text-to-speech plain and
streamed, and discovery, with the options docs/servers.md gives for it.
"""

from __future__ import annotations

import struct

import pytest
from audio_samples import tone
from harness import Client, proxy_port, utterance
from test_stt import transcribe
from test_tts import assert_truthful, speak
from upstream import PCM_RATE, PROFILES, SECONDS_PER_CHARACTER, amplitude_for, describe_wav
from wyoming.info import Describe, Info
from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

# The options each server needs (docs/servers.md), and the voices discovery should find.
SETUPS = {
    "openai": ((), ["alloy", "ash"]),
    "groq": (
        ("--tts-models", "canopylabs/orpheus-v1-english", "--tts-voices", "autumn", "troy",
         "--stt-models", "whisper-large-v3-turbo"),
        ["autumn", "troy"],
    ),
    "speaches": (
        ("--tts-models", "speaches-ai/Kokoro-82M-v1.0-ONNX", "--stt-models", "Systran/faster-whisper-small"),
        ["af_heart", "am_adam"],
    ),
    "kokoro-fastapi": (("--tts-models", "kokoro", "--stt-models"), ["af_heart", "am_adam"]),
    "kokoros": (("--tts-models", "tts-1", "--stt-models"), ["af_heart", "am_adam"]),
    "kokoros-2025": (("--tts-models", "tts-1", "--stt-models"), ["af_heart", "am_adam"]),
    "localai": (("--tts-models", "voice-en-us-amy-low", "--stt-models", "whisper-1"), ["voice-en-us-amy-low"]),
    "openedai-speech": (("--tts-models", "tts-1", "--tts-voices", "alloy", "echo", "--stt-models"), ["alloy", "echo"]),
    "openedai-speech-0.13": (
        ("--tts-models", "tts-1", "--tts-voices", "alloy", "--tts-response-format", "mp3", "--stt-models"),
        ["alloy"],
    ),
}  # fmt: skip
assert set(SETUPS) == set(PROFILES) - {"spec"}
TRANSCRIBING = [name for name in SETUPS if PROFILES[name].transcribes]
TEXT = "The living room lamp is now on."


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def max_jump(pcm: bytes) -> int:
    values = samples(pcm)
    return max(abs(b - a) for a, b in zip(values, values[1:], strict=False))


async def started(start_proxy, upstream, name: str, *flags: str):
    upstream.use(name)
    return await start_proxy(*SETUPS[name][0], *flags)


@pytest.mark.parametrize("name", SETUPS)
async def test_speech(start_proxy, upstream, name):
    proxy = await started(start_proxy, upstream, name)
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    seconds = assert_truthful(start, chunks)
    assert abs(seconds - len(TEXT) * SECONDS_PER_CHARACTER) < 0.09  # mp3 pads by up to two frames
    pcm = b"".join(c.audio for c in chunks)
    if upstream.requests[-1].json["response_format"] == "mp3":
        return  # a lossy codec rings where the tone stops: not a header's click
    # No header or trailer byte played: the tone never jumps further than its own slope allows.
    slope = 2 * 3.1416 * 440 * amplitude_for(TEXT) / start.rate
    assert max_jump(pcm) < 1.6 * slope + 60, name


@pytest.mark.parametrize("name", SETUPS)
async def test_streamed_speech(start_proxy, upstream, name):
    flags = SETUPS[name][0]
    model = flags[flags.index("--tts-models") + 1] if "--tts-models" in flags else "gpt-4o-mini-tts"
    proxy = await started(start_proxy, upstream, name, "--tts-streaming-models", model)
    words = ["The lamp ", "is on. ", "The door ", "is locked ", "now."]
    async with Client(proxy_port(proxy)) as client:
        await client.send(SynthesizeStart(voice=SynthesizeVoice(name=SETUPS[name][1][0])).event())
        await client.send(*(SynthesizeChunk(text=w).event() for w in words), SynthesizeStop().event())
        events = await client.read_until("synthesize-stopped")
    kinds = [e.type for e in events]
    assert kinds[0] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    rates = {e.data["rate"] for e in events if e.type == "audio-chunk"}
    assert len(rates) == 1
    audio = sum(len(e.payload) for e in events if e.type == "audio-chunk") / 2 / rates.pop()
    spoken = [r.json["input"] for r in upstream.requests if r.path == "/audio/speech"]
    assert " ".join(spoken).split() == "".join(words).split()
    expected = sum(len(text) for text in spoken) * SECONDS_PER_CHARACTER
    assert abs(audio - expected) < 0.09 * len(spoken)


@pytest.mark.parametrize("name", TRANSCRIBING)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_transcription(start_proxy, upstream, name, streamed):
    stt_model = (
        SETUPS[name][0][SETUPS[name][0].index("--stt-models") + 1] if "--stt-models" in SETUPS[name][0] else None
    )
    flags = ("--stt-streaming-models", stt_model or "gpt-4o-mini-transcribe") if streamed else ()
    proxy = await started(start_proxy, upstream, name, *flags)
    pcm = tone(1.0, 16000)
    text = await transcribe(proxy_port(proxy), pcm)
    sent = upstream.requests[-1]
    assert text == describe_wav(sent.file_bytes) == "16000 frames at 16000 Hz, 16-bit, 1 ch"
    assert sent.fields.get("stream") == ("true" if streamed else None)


@pytest.mark.parametrize("name", SETUPS)
async def test_discovery(start_proxy, upstream, name):
    proxy = await started(start_proxy, upstream, name)
    async with Client(proxy_port(proxy)) as client:
        await client.send(Describe().event())
        info = Info.from_event(await client.read())
    expected = SETUPS[name][1]
    assert [v.name for v in info.tts[0].voices][: len(expected)] == expected
    assert bool(info.asr) == PROFILES[name].transcribes


async def test_speaches_transcripts_stream_segment_by_segment(start_proxy, upstream):
    upstream.transcript = "Turn on the lamp. And the fan."
    proxy = await started(start_proxy, upstream, "speaches", "--stt-streaming-models", "Systran/faster-whisper-small")
    async with Client(proxy_port(proxy)) as client:
        await client.send(*utterance(tone(0.5, 16000), [3200]))
        events = await client.read_until("transcript")
    chunks = [e.data["text"] for e in events if e.type == "transcript-chunk"]
    assert chunks == [" Turn on the lamp.", " And the fan."]
    assert events[-1].data["text"] == "Turn on the lamp. And the fan."
    assert upstream.requests[-1].fields["vad_filter"] == "false"


async def test_localai_answers_wav_whatever_was_asked(start_proxy, upstream):
    proxy = await started(start_proxy, upstream, "localai", "--tts-response-format", "mp3")
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert upstream.requests[-1].json["response_format"] == "mp3"
    assert start.rate == 22050  # the WAV's own rate: what arrived was decoded
    assert abs(assert_truthful(start, chunks) - len(TEXT) * SECONDS_PER_CHARACTER) < 0.001


async def test_kokoros_raw_pcm_is_played_when_wav_was_asked(start_proxy, upstream):
    proxy = await started(start_proxy, upstream, "kokoros")
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert upstream.requests[-1].json["response_format"] == "wav"
    assert start.rate == PCM_RATE
    assert b"".join(c.audio for c in chunks) == tone(
        len(TEXT) * SECONDS_PER_CHARACTER, PCM_RATE, amplitude=amplitude_for(TEXT)
    )


async def test_openedai_speech_pcm_rate_comes_from_its_content_type(start_proxy, upstream):
    proxy = await started(start_proxy, upstream, "openedai-speech", "--tts-response-format", "pcm")
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert start.rate == 22050  # audio/pcm;rate=22050, not --tts-pcm-sample-rate's 24000
    assert abs(assert_truthful(start, chunks) - len(TEXT) * SECONDS_PER_CHARACTER) < 0.001


async def test_old_openedai_speech_refusing_wav_says_so(start_proxy, upstream):
    upstream.use("openedai-speech-0.13")
    proxy = await start_proxy("--tts-models", "tts-1", "--stt-models")  # wav, as by default
    async with Client(proxy_port(proxy)) as client:
        from wyoming.tts import Synthesize

        await client.send(Synthesize(text=TEXT).event())
        event = await client.read()
    assert event.type == "error" and "500" in event.data["text"] and "InternalServerError" in event.data["text"]


async def test_kokoros_float_wav_is_played_when_mp3_was_asked(start_proxy, upstream):
    proxy = await started(start_proxy, upstream, "kokoros-2025", "--tts-response-format", "mp3")
    start, chunks, _ = await speak(proxy_port(proxy), TEXT)
    assert upstream.requests[-1].json["response_format"] == "mp3"
    expected = tone(len(TEXT) * SECONDS_PER_CHARACTER, PCM_RATE, amplitude=amplitude_for(TEXT))
    assert start.rate == PCM_RATE and b"".join(c.audio for c in chunks) == expected  # float to 16-bit, exactly


async def test_groq_rate_limit_with_a_short_retry_after_is_waited_out(start_proxy, upstream):
    from upstream import Fault

    proxy = await started(start_proxy, upstream, "groq")
    upstream.speech_faults.append(Fault(status=429, message="Rate limit reached for model", retry_after="1", times=1))
    await speak(proxy_port(proxy), TEXT, voice="autumn")
    assert [r.json["voice"] for r in upstream.requests if r.path == "/audio/speech"] == ["autumn", "autumn"]
