"""Speech to text, as Home Assistant drives it: transcribe, audio-start, chunks at any boundary, audio-stop."""

from __future__ import annotations

import io
import wave

import pytest
from audio_samples import tone
from harness import TEST_KEY, Client, chunks_of, proxy_port, reference_file, until, utterance
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioStart


async def transcribe(port: int, pcm: bytes, **shape) -> str:
    """The transcript of one utterance of ``pcm`` (``shape``: as harness.utterance takes it)."""
    async with Client(port) as client:
        await client.send(*utterance(pcm, **shape))
        events = await client.read_until("transcript")
        return Transcript.from_event(events[-1]).text


async def test_odd_chunks_arrive_as_one_valid_wav(start_proxy, upstream):
    proxy = await start_proxy()
    pcm = tone(1.5, 16000)
    text = await transcribe(proxy_port(proxy), pcm, sizes=(333, 1, 4097, 2))
    assert text == "24000 frames at 16000 Hz, 16-bit, 1 ch"
    request = upstream.requests[-1]
    assert request.fields["model"] == "gpt-4o-mini-transcribe"
    assert request.fields["language"] == "en"
    assert request.fields["response_format"] == "json"
    assert request.headers["Authorization"] == f"Bearer {TEST_KEY}"
    with wave.open(io.BytesIO(request.file_bytes)) as w:
        assert w.readframes(w.getnframes()) == pcm


@pytest.mark.parametrize(("rate", "width", "channels"), [(16000, 2, 1), (44100, 2, 2), (8000, 1, 1), (48000, 4, 1)])
async def test_any_declared_format_is_sent_truthfully(start_proxy, rate, width, channels):
    proxy = await start_proxy()
    frames = rate // 2
    pcm = bytes(range(256)) * (frames * width * channels // 256) + b"\0" * (frames * width * channels % 256)
    text = await transcribe(proxy_port(proxy), pcm, rate=rate, width=width, channels=channels, sizes=(777,))
    assert text == f"{frames} frames at {rate} Hz, {width * 8}-bit, {channels} ch"


async def test_transcribe_name_selects_a_served_model_and_region_is_dropped(start_proxy, upstream):
    proxy = await start_proxy()
    await transcribe(proxy_port(proxy), tone(0.2, 16000), name="whisper-1", language="de-DE")
    assert upstream.requests[-1].fields["model"] == "whisper-1"
    assert upstream.requests[-1].fields["language"] == "de"
    await transcribe(proxy_port(proxy), tone(0.2, 16000), name="not-a-model", language=None)
    assert upstream.requests[-1].fields["model"] == "gpt-4o-mini-transcribe"
    assert upstream.requests[-1].fields["language"] == "en"  # the first configured language


async def test_prompt_temperature_and_extra_body_reach_the_upstream(start_proxy, upstream):
    upstream.allowed_extra_fields = {"vad_filter", "hotwords"}
    proxy = await start_proxy(
        "--stt-prompt", 'Küche, "living" room\r\n--and the hall', "--stt-temperature", "0.2",
        env={"STT_EXTRA_BODY": '{"hotwords": ["lamp", "light"], "vad_filter": true}'},
    )  # fmt: skip
    await transcribe(proxy_port(proxy), tone(0.2, 16000))
    fields = upstream.requests[-1].fields
    assert fields["prompt"] == 'Küche, "living" room\r\n--and the hall'  # multipart-safe, whatever it holds
    assert float(fields["temperature"]) == 0.2
    assert fields["hotwords"] == ["lamp", "light"]
    assert fields["vad_filter"] == "true"


async def test_speaches_gets_its_vad_filter_switched_off(start_proxy, upstream):
    upstream.backend = "SPEACHES"
    upstream.allowed_extra_fields = {"vad_filter"}
    proxy = await start_proxy()
    await transcribe(proxy_port(proxy), tone(0.2, 16000))
    assert upstream.requests[-1].fields["vad_filter"] == "false"


async def test_utterance_longer_than_the_bound_is_refused(start_proxy, upstream):
    proxy = await start_proxy("--stt-max-seconds", "1")
    async with Client(proxy_port(proxy)) as client:
        await client.send(Transcribe(language="en").event(), AudioStart(rate=16000, width=2, channels=1).event())
        await client.send(*chunks_of(tone(1.2, 16000), [3200]))
        event = await client.read()
        assert event is not None and event.type == "error"
        assert "--stt-max-seconds" in event.data["text"]
        assert await client.read() is None  # then the connection closes
    assert not upstream.requests


async def test_two_utterances_on_one_connection(start_proxy, upstream):
    proxy = await start_proxy()
    async with Client(proxy_port(proxy)) as client:
        for seconds in (0.25, 0.5):
            await client.send(*utterance(tone(seconds, 16000), [1000]))
            events = await client.read_until("transcript")
            assert Transcript.from_event(events[-1]).text.startswith(f"{int(seconds * 16000)} frames")


@pytest.mark.parametrize(
    "name", ["turn_on_the_living_room_lamp.wav", "whats_your_name_french.wav", "living_room_light_de.wav"]
)
async def test_real_recordings_reach_the_upstream_intact(start_proxy, upstream, name):
    with wave.open(str(reference_file("audio", name))) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    proxy = await start_proxy()
    await transcribe(proxy_port(proxy), pcm, rate=rate, width=width, channels=channels, sizes=(1023, 2048, 5))
    with wave.open(io.BytesIO(upstream.requests[-1].file_bytes)) as sent:
        assert (sent.getframerate(), sent.getsampwidth(), sent.getnchannels()) == (rate, width, channels)
        assert sent.readframes(sent.getnframes()) == pcm


@pytest.mark.parametrize("upstream_streams", [True, False])
async def test_streaming_model_sends_transcript_chunks_then_the_transcript(start_proxy, upstream, upstream_streams):
    upstream.streams_transcripts = upstream_streams  # some servers ignore stream=true
    upstream.transcript = "turn on the kitchen light"
    proxy = await start_proxy("--stt-streaming-models", "gpt-4o-transcribe")
    async with Client(proxy_port(proxy)) as client:
        await client.send(*utterance(tone(0.5, 16000), [999]))
        events = await client.read_until("transcript")
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript-stop", "transcript"]
    chunks = [e.data["text"] for e in events if e.type == "transcript-chunk"]
    assert "".join(chunks) == ("turn on the kitchen light" if upstream_streams else "")
    assert len(chunks) == (5 if upstream_streams else 0)
    assert Transcript.from_event(events[-1]).text == "turn on the kitchen light"
    assert upstream.requests[-1].fields["stream"] == "true"
    assert upstream.requests[-1].fields["model"] == "gpt-4o-transcribe"


async def test_a_client_that_leaves_cancels_its_transcription(start_proxy, upstream):
    upstream.answer_delay = 5
    proxy = await start_proxy()
    async with Client(proxy_port(proxy)) as client:
        await client.send(*utterance(tone(0.3, 16000), [1000]))
        await until(lambda: upstream.requests)
    await until(lambda: upstream.cancelled)
    assert upstream.cancelled == 1
