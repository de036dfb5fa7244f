"""What real servers do besides their format quirks: rate limits, broken bodies, dripping speech,
refused formats, transcript shapes, silence, Whisper's hallucinations, and voices that change."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import pytest
from audio_samples import tone
from harness import Client, proxy_port, utterance
from realtime_server import RealtimeFault, RealtimeServer
from test_stt import transcribe
from test_tts import speak
from test_upstream_faults import FAST, expect_error_then_close, stt_events
from upstream import Fault
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_openai.__main__ import Proxy
from wyoming_openai.settings import load_settings

TEXT = "The living room lamp is now on."


def speech_requests(upstream) -> list:
    return [r for r in upstream.requests if r.path == "/audio/speech"]


# --- rate limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after",
    ["1", "1.2", "http-date"],
)
async def test_a_short_retry_after_is_waited_out(start_proxy, upstream, retry_after):
    if retry_after == "http-date":
        retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    upstream.speech_faults.append(Fault(status=429, message="Rate limit reached", retry_after=retry_after, times=1))
    proxy = await start_proxy()
    began = time.monotonic()
    await speak(proxy_port(proxy), TEXT)
    assert len(speech_requests(upstream)) == 2
    assert 0.9 < time.monotonic() - began < 3


async def test_a_short_retry_after_is_waited_out_for_transcriptions_too(start_proxy, upstream):
    upstream.transcription_faults.append(Fault(status=429, retry_after="1", times=1))
    proxy = await start_proxy()
    began = time.monotonic()
    text = await transcribe(proxy_port(proxy), tone(0.5, 16000))
    assert text.startswith("8000 frames") and 0.9 < time.monotonic() - began < 3
    assert len([r for r in upstream.requests if r.path == "/audio/transcriptions"]) == 2


@pytest.mark.parametrize(("flags", "retry_after"), [((), "7"), (("--upstream-retry-after-max", "0"), "1")])
async def test_a_long_retry_after_fails_at_once_saying_when(start_proxy, upstream, flags, retry_after):
    upstream.speech_faults.append(Fault(status=429, message="Rate limit reached for model", retry_after=retry_after))
    proxy = await start_proxy(*flags)
    began = time.monotonic()
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert time.monotonic() - began < 0.5
    assert "rate limited" in text and f"retry after {retry_after} s" in text and "Rate limit reached" in text
    assert len(speech_requests(upstream)) == 1


async def test_waits_add_up_to_the_maximum_at_most(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=429, retry_after="0.8"))  # always limited
    proxy = await start_proxy("--upstream-retry-after-max", "2")
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert "retry after 0.8 s" in text
    assert len(speech_requests(upstream)) == 3  # waited 0.8 + 0.8; a third wait would pass 2 s


async def test_a_server_asking_for_no_wait_every_time_is_not_retried_for_ever(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=429, retry_after="0"))
    proxy = await start_proxy()
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert "rate limited" in text and len(speech_requests(upstream)) == 4  # the first, and three more


async def test_a_client_that_leaves_during_the_wait_is_not_retried_for(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=429, retry_after="1.5", times=1))
    proxy = await start_proxy()
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text=TEXT).event())
        for _ in range(100):
            if speech_requests(upstream):
                break
            await asyncio.sleep(0.01)
    await asyncio.sleep(2)  # past the Retry-After
    assert len(speech_requests(upstream)) == 1


async def test_retry_after_ms_is_read(start_proxy, upstream):
    from wyoming_openai.upstream import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


# --- bodies that break --------------------------------------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
RAW_FAULTS = {
    "fewer bytes than Content-Length": (
        HEAD + b'Content-Length: 100\r\n\r\n{"text": "tr',
        "fewer bytes than its Content-Length",
    ),
    "closed in a chunk": (HEAD + b'Transfer-Encoding: chunked\r\n\r\n40\r\n{"text": "tr', "in the middle of a chunk"),
    "bad chunk size": (HEAD + b'Transfer-Encoding: chunked\r\n\r\nZZ\r\n{"text"\r\n', "malformed HTTP response"),
    "bad status line": (b"HTTP/1.1 OK-ish\r\n\r\n", "malformed HTTP response"),
    "broken gzip": (HEAD + b"Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\n0123456789", "does not decompress"),
    "closed before answering": (b"", "closed the connection before its answer was complete"),
    "closed in the headers": (b"HTTP/1.1 200 OK\r\nContent-Ty", "closed the connection"),
}


@pytest.mark.parametrize("kind", RAW_FAULTS)
async def test_every_broken_body_is_an_upstream_error_for_speech(start_proxy, upstream, kind, caplog):
    raw, words = RAW_FAULTS[kind]
    wav_start = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0\1\0\1\0"  # as long as the JSON it stands for
    upstream.speech_faults.append(
        Fault(raw=raw.replace(b"application/json", b"audio/wav").replace(b'{"text": "tr', wav_start[:12]))
    )
    proxy = await start_proxy(*FAST)
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert words in text and upstream.url in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback: a known failure


@pytest.mark.parametrize("kind", RAW_FAULTS)
async def test_every_broken_body_is_an_upstream_error_for_transcriptions(start_proxy, upstream, kind, caplog):
    raw, words = RAW_FAULTS[kind]
    upstream.transcription_faults.append(Fault(raw=raw))
    proxy = await start_proxy(*FAST)
    text = await expect_error_then_close(proxy_port(proxy), stt_events())
    assert words in text and "STT" in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("kind", RAW_FAULTS)
async def test_every_broken_body_in_discovery_is_a_logged_upstream_error(start_proxy, upstream, kind, caplog):
    caplog.set_level(logging.DEBUG)
    raw, words = RAW_FAULTS[kind]
    upstream.use("kokoro-fastapi")
    upstream.listing_faults.append(Fault(raw=raw))
    proxy = await start_proxy("--tts-models", "kokoro", "--stt-models")
    async with Client(proxy_port(proxy)) as client:
        await client.send(Describe().event())
        info = Info.from_event(await client.read())
    assert "alloy" in [v.name for v in info.tts[0].voices]  # nothing listed: OpenAI's, provisionally
    assert any(words in r.getMessage() for r in caplog.records if r.name == "wyoming_openai.backends")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or "Discovery failed" in r.getMessage()]


async def test_a_websocket_that_breaks_the_protocol_is_an_upstream_error(realtime: RealtimeServer):
    realtime.fault = RealtimeFault(broken_frame_on="input_audio_buffer.commit")
    settings = load_settings(
        ["--uri", "tcp://127.0.0.1:0", "--stt-realtime-models", "gpt-4o-transcribe", "--tts-models",
         "--stt-backend", "OPENAI", "--upstream-timeout", "2"],
        {"STT_OPENAI_URL": realtime.url, "OPENAI_API_KEY": "test-key-3f9a7c1e5b"},
    )  # fmt: skip
    proxy = Proxy(settings)
    await proxy.start()
    try:
        text = await expect_error_then_close(proxy_port(proxy), stt_events())
    finally:
        await proxy.stop()
    assert "broke the websocket protocol" in text and "reserved bits" in text


# --- speech slower than it plays -----------------------------------------------------------------------


async def test_speech_falling_behind_real_time_is_given_up(start_proxy, upstream):
    # The header and 0.1 s of audio at once, then a byte every 20 ms: 25 ms of audio a second.
    upstream.speech_faults.append(Fault(drip_after=44 + 4800, drip_interval=0.02))
    proxy = await start_proxy("--upstream-read-timeout", "1", "--upstream-timeout", "30")
    began = time.monotonic()
    async with Client(proxy_port(proxy)) as client:
        await client.send(Synthesize(text="x" * 100).event())
        events = []
        while (event := await client.read(timeout=8)) is not None:
            events.append(event)
    assert 1.0 < time.monotonic() - began < 3.5
    assert events[0].type == "audio-start" and events[-1].type == "error"
    assert "slower than it plays" in events[-1].data["text"]


# --- refused formats -------------------------------------------------------------------------------------


async def test_a_refused_format_is_retried_in_the_one_named_and_remembered(start_proxy, upstream, caplog):
    upstream.use("groq")
    proxy = await start_proxy("--tts-response-format", "mp3", "--tts-voices", "autumn")
    for _ in range(2):
        start, chunks, _ = await speak(proxy_port(proxy), TEXT)
        assert start.rate == 24000 and chunks
    assert [r.json["response_format"] for r in speech_requests(upstream)] == ["mp3", "wav", "wav"]
    assert "refused response_format mp3" in caplog.text


async def test_a_422_naming_response_format_tries_the_next_format(start_proxy, upstream):
    upstream.use("speaches")
    upstream.profile = type(upstream.profile)(
        **{**upstream.profile.__dict__, "speech_formats": frozenset({"flac", "mp3"})}
    )
    proxy = await start_proxy()
    await speak(proxy_port(proxy), TEXT)
    await speak(proxy_port(proxy), TEXT)
    # "Input should be 'flac' or 'mp3'": the first of those in our order of preference, remembered.
    assert [r.json["response_format"] for r in speech_requests(upstream)] == ["wav", "flac", "flac"]


async def test_a_second_refusal_is_the_answer(start_proxy, upstream):
    upstream.use("speaches")
    upstream.profile = type(upstream.profile)(**{**upstream.profile.__dict__, "speech_formats": frozenset({"aac"})})
    upstream.speech_faults.append(Fault(status=422, message="response_format: no"))  # names none
    proxy = await start_proxy()
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert "422" in text and [r.json["response_format"] for r in speech_requests(upstream)] == ["wav", "pcm"]


async def test_other_400s_are_not_retried(start_proxy, upstream):
    upstream.speech_faults.append(Fault(status=400, message="voice 'x' not found"))
    proxy = await start_proxy()
    text = await expect_error_then_close(proxy_port(proxy), [Synthesize(text=TEXT).event()])
    assert "voice 'x' not found" in text and len(speech_requests(upstream)) == 1


# --- transcript shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/plain", b"turn on the lamp\n", "turn on the lamp"),
        ("application/json", b'{"text": " turn on the lamp ", "x_groq": {"id": "r"}}', "turn on the lamp"),
        ("application/json", b'{"task": "transcribe", "segments": [{"text": " a"}], "text": "a b"}', "a b"),
        ("application/json", b'{"segments": [{"text": " turn on"}, {"text": " the lamp"}]}', "turn on the lamp"),
        ("application/json", b'"turn on the lamp"', "turn on the lamp"),
        ("text/plain", b"[laughs] turn on the lamp", "[laughs] turn on the lamp"),
        ("application/json", b'{"text": ""}', ""),
        ("text/event-stream", b'data: {"text": " turn on"}\n\ndata: {"text": " the lamp"}\n\n', "turn on the lamp"),
    ],
    ids=["plain text", "json", "verbose json", "segments only", "json string", "text like json", "empty", "sse"],
)
async def test_transcript_shapes(start_proxy, upstream, content_type, body, expected):
    upstream.transcription_faults.append(Fault(body=body))
    proxy = await start_proxy()
    upstream_reply = _patched_content_type(upstream, content_type)
    try:
        assert await transcribe(proxy_port(proxy), tone(0.5, 16000)) == expected
    finally:
        upstream_reply()


def _patched_content_type(upstream, content_type: str):
    """Fault bodies go out as JSON; answer with ``content_type`` instead, for this test."""
    from aiohttp import web

    original = web.Response.__init__

    def init(self, *args, **kwargs):
        if kwargs.get("content_type") == "application/json" and "body" in kwargs:
            kwargs["content_type"] = content_type
        original(self, *args, **kwargs)

    web.Response.__init__ = init

    def restore() -> None:
        web.Response.__init__ = original

    return restore


async def test_an_error_in_a_200_reply_is_reported(start_proxy, upstream):
    upstream.transcription_faults.append(Fault(body=b'{"error": {"message": "model is loading"}}'))
    proxy = await start_proxy()
    text = await expect_error_then_close(proxy_port(proxy), stt_events())
    assert "model is loading" in text


async def test_an_empty_streamed_transcript_is_answered_at_once(start_proxy, upstream):
    upstream.transcript = ""
    proxy = await start_proxy("--stt-streaming-models", "gpt-4o-mini-transcribe")
    async with Client(proxy_port(proxy)) as client:
        await client.send(*utterance(tone(0.5, 16000), [3200]))
        events = await client.read_until("transcript")
    assert events[-1].data["text"] == ""


# --- silence ---------------------------------------------------------------------------------------------


def noise(seconds: float, peak: int, rate: int = 16000) -> bytes:
    import random
    import struct

    generator = random.Random(7)
    return struct.pack(
        f"<{int(seconds * rate)}h", *(generator.randint(-peak, peak) for _ in range(int(seconds * rate)))
    )


@pytest.mark.parametrize("audio", ["digital silence", "dither", "noise at -66 dBFS"])
async def test_silence_is_not_sent_upstream(start_proxy, upstream, audio):
    pcm = {"digital silence": bytes(32000), "dither": noise(1, 1), "noise at -66 dBFS": noise(1, 16)}[audio]
    proxy = await start_proxy()
    assert await transcribe(proxy_port(proxy), pcm) == ""
    assert not upstream.requests


async def test_a_quiet_far_field_voice_is_still_transcribed(start_proxy, upstream):
    proxy = await start_proxy()
    quiet = tone(1.0, 16000, freq=220, amplitude=100)  # peaks at -50 dBFS: a distant, quiet speaker
    assert (await transcribe(proxy_port(proxy), quiet)).startswith("16000 frames")
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("flags", [("--stt-silence-gate", "off"), ("--stt-silence-threshold", "-96")])
async def test_the_silence_gate_can_be_turned_off_or_down(start_proxy, upstream, flags):
    proxy = await start_proxy(*flags)
    await transcribe(proxy_port(proxy), noise(0.5, 16))
    assert len(upstream.requests) == 1


async def test_silence_streamed_gets_an_empty_transcript_without_a_request(start_proxy, upstream):
    proxy = await start_proxy("--stt-streaming-models", "gpt-4o-mini-transcribe")
    assert await transcribe(proxy_port(proxy), bytes(16000)) == ""
    assert not upstream.requests


# --- Whisper's hallucinations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hallucination",
    ["Thank you for watching.", "Thanks for watching!", "Subtitles by the Amara.org community",
     "Untertitel der Amara.org-Community", "Sous-titres réalisés par la communauté d'Amara.org",
     "Subtítulos realizados por la comunidad de Amara.org", "ご視聴ありがとうございました", "Продолжение следует...", " you"],
)  # fmt: skip
async def test_hallucinations_of_short_audio_are_dropped(start_proxy, upstream, hallucination):
    upstream.transcript = hallucination
    proxy = await start_proxy()
    assert await transcribe(proxy_port(proxy), noise(1.5, 400)) == ""
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("text", ["Thank you.", "Thank you for turning on the lights.", "Subtitles on, please."])
async def test_what_people_say_is_kept(start_proxy, upstream, text):
    upstream.transcript = text
    proxy = await start_proxy()
    assert await transcribe(proxy_port(proxy), noise(1.5, 400)) == text


async def test_a_hallucination_phrase_from_long_loud_audio_is_kept(start_proxy, upstream):
    upstream.transcript = "Thank you for watching."
    proxy = await start_proxy()
    assert await transcribe(proxy_port(proxy), tone(11, 16000, amplitude=8000)) == "Thank you for watching."


async def test_the_filter_can_be_turned_off(start_proxy, upstream):
    upstream.transcript = "Thank you for watching."
    proxy = await start_proxy("--stt-hallucination-filter", "off")
    assert await transcribe(proxy_port(proxy), noise(1.5, 400)) == "Thank you for watching."


# --- voices that change -----------------------------------------------------------------------------------


async def voices_of(port: int) -> list[str]:
    async with Client(port) as client:
        await client.send(Describe().event())
        return [v.name for v in Info.from_event(await client.read()).tts[0].voices]


async def test_a_server_that_lists_voices_later_shows_up_when_a_voice_is_unknown(start_proxy, upstream):
    upstream.use("kokoros")
    upstream.listing_faults.append(Fault(status=503, message="starting"))
    proxy = await start_proxy("--tts-models", "tts-1", "--stt-models")
    assert (await voices_of(proxy_port(proxy)))[:2] == ["alloy", "ash"]
    proxy.rediscovery.min_gap = 0
    upstream.listing_faults.clear()
    await speak(proxy_port(proxy), TEXT, voice="af_heart")  # unknown: trusted, and a reason to ask again
    assert upstream.requests[-1].json["voice"] == "af_heart"
    for _ in range(200):
        if await voices_of(proxy_port(proxy)) == ["af_heart", "am_adam"]:
            break
        await asyncio.sleep(0.02)
    assert await voices_of(proxy_port(proxy)) == ["af_heart", "am_adam"]


async def test_discovery_repeats_and_follows_new_voices(start_proxy, upstream):
    upstream.use("kokoro-fastapi")
    proxy = await start_proxy("--tts-models", "kokoro", "--stt-models")
    assert await voices_of(proxy_port(proxy)) == ["af_heart", "am_adam"]
    upstream.voices = ["af_heart", "am_adam", "bf_emma"]
    proxy.rediscovery.interval = 0.05
    proxy.rediscovery.min_gap = 0
    proxy.rediscovery.unknown_voice("nudge: the loop waits with the old interval")
    for _ in range(200):
        if "bf_emma" in await voices_of(proxy_port(proxy)):
            break
        await asyncio.sleep(0.02)
    assert await voices_of(proxy_port(proxy)) == ["af_heart", "am_adam", "bf_emma"]
    upstream.voices = ["bf_emma"]  # no nudge now: the interval alone brings it
    for _ in range(200):
        if await voices_of(proxy_port(proxy)) == ["bf_emma"]:
            break
        await asyncio.sleep(0.02)
    assert await voices_of(proxy_port(proxy)) == ["bf_emma"]


async def test_a_named_voice_unknown_to_a_listing_server_falls_back_and_asks_again(start_proxy, upstream, caplog):
    upstream.use("kokoro-fastapi")
    proxy = await start_proxy("--tts-models", "kokoro", "--stt-models")
    proxy.rediscovery.min_gap = 0
    rounds = proxy.rediscovery.rounds
    await speak(proxy_port(proxy), TEXT, voice=SynthesizeVoice(name="nobody").name)
    assert upstream.requests[-1].json["voice"] == "af_heart" and "Unknown voice 'nobody'" in caplog.text
    for _ in range(200):
        if proxy.rediscovery.rounds > rounds:
            break
        await asyncio.sleep(0.02)
    assert proxy.rediscovery.rounds == rounds + 1
