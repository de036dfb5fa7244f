"""The Realtime API clients against a local websocket server that checks the documented events."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
from audio_samples import tone
from harness import TEST_KEY
from realtime_server import RATE, RealtimeFault, RealtimeServer

from wyoming_openai.audio import PcmFormat
from wyoming_openai.catalog import Voice
from wyoming_openai.realtime import RealtimeSynthesizer, RealtimeTranscriber, deep_merge
from wyoming_openai.settings import Secret, Settings, load_settings
from wyoming_openai.upstream import Upstream, UpstreamError

TIMEOUT = 1.0
READ_TIMEOUT = 0.5
VOICE = Voice("marin", "gpt-realtime", "Marin")


def make_settings(realtime: RealtimeServer, *flags: str, env: dict[str, str] | None = None) -> Settings:
    environ = {
        "STT_OPENAI_URL": realtime.url,
        "TTS_OPENAI_URL": realtime.url,
        "OPENAI_API_KEY": TEST_KEY,
        **(env or {}),
    }
    return load_settings(
        ["--stt-realtime-models", "gpt-4o-transcribe", "--tts-realtime-models", "gpt-realtime", *flags], environ
    )


def make_upstream(url: str, role: str = "STT", key: str = TEST_KEY) -> Upstream:
    return Upstream(
        role,
        url,
        Secret(key),
        timeout=TIMEOUT,
        connect_timeout=0.5,
        read_timeout=READ_TIMEOUT,
        retries=0,
        max_connections=10,
    )


@pytest.fixture
async def upstreams(realtime: RealtimeServer) -> AsyncIterator[dict[str, Upstream]]:
    made = {"STT": make_upstream(realtime.url, "STT"), "TTS": make_upstream(realtime.url, "TTS")}
    try:
        yield made
    finally:
        for upstream in made.values():
            await upstream.close()


def dominant_frequency(pcm: bytes, rate: int) -> float:
    """Zero crossings of a sine tone say its frequency, so a wrong sample rate shows as a wrong pitch."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


def widen(pcm16: bytes, width: int, channels: int) -> bytes:
    """16-bit mono PCM as ``width``-byte samples, copied to ``channels`` channels."""
    out = bytearray()
    for (value,) in struct.iter_unpack("<h", pcm16):
        if width == 1:
            sample = bytes([(value >> 8) + 128])
        else:
            sample = (value << (8 * (width - 2))).to_bytes(width, "little", signed=True)
        out += sample * channels
    return bytes(out)


async def stream(transcription, pcm: bytes, fmt: PcmFormat, chunk_seconds: float = 0.05) -> None:
    step = int(chunk_seconds * fmt.rate) * fmt.frame_bytes
    for start in range(0, len(pcm), step):
        await transcription.send_audio(pcm[start : start + step], fmt)


async def transcribe(
    settings: Settings, upstream: Upstream, pcm: bytes, fmt: PcmFormat, language: str | None = "en-US"
):
    transcription = await RealtimeTranscriber(settings, upstream).open("gpt-4o-transcribe", language)
    try:
        await stream(transcription, pcm, fmt)
        return [piece async for piece in transcription.finish()]
    finally:
        await transcription.close()


# --- speech to text -----------------------------------------------------------------------------------


async def test_transcription_streams_audio_before_the_end_and_yields_deltas_then_the_text(realtime, upstreams):
    settings = make_settings(realtime, "--stt-prompt", "Home automation commands")
    fmt = PcmFormat(16000)
    transcription = await RealtimeTranscriber(settings, upstreams["STT"]).open("gpt-4o-transcribe", "en-US")
    try:
        await stream(transcription, tone(1.0, 16000), fmt)
        # The audio is already upstream while the user is "still speaking": nothing waits for audio-stop.
        for _ in range(100):
            if len(realtime.connections[0].audio) >= int(0.95 * RATE) * 2:
                break
            await asyncio.sleep(0.01)
        conn = realtime.connections[0]
        assert len(conn.audio) >= int(0.95 * RATE) * 2
        assert conn.committed is None
        pieces = [piece async for piece in transcription.finish()]
    finally:
        await transcription.close()

    assert pieces[-1] == (True, "Turn on the kitchen lights.")
    assert [text for done, text in pieces[:-1] if not done] == ["Turn", " on", " the", " kitchen", " lights."]
    assert conn.query == {"intent": "transcription"}
    assert conn.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert conn.session == {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "Home automation commands"},
                "turn_detection": None,
            }
        },
    }
    types = conn.event_types
    assert types[0] == "session.update" and types[-1] == "input_audio_buffer.commit"
    assert set(types[1:-1]) == {"input_audio_buffer.append"}
    assert abs(len(conn.committed) / (2 * RATE) - 1.0) < 0.01
    assert abs(dominant_frequency(conn.committed, RATE) - 440) < 5


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(24000, 2, 1), (16000, 2, 1), (48000, 2, 2), (22050, 4, 1), (8000, 1, 1), (44100, 3, 2)],
)
async def test_any_client_format_reaches_the_api_as_pcm16_mono_24khz(realtime, upstreams, rate, width, channels):
    settings = make_settings(realtime)
    pcm = widen(tone(0.8, rate), width, channels)
    pieces = await transcribe(settings, upstreams["STT"], pcm, PcmFormat(rate, width, channels))
    assert pieces[-1] == (True, "Turn on the kitchen lights.")
    committed = realtime.connections[0].committed
    assert committed is not None
    assert abs(len(committed) / (2 * RATE) - 0.8) < 0.01
    assert abs(dominant_frequency(committed, RATE) - 440) < 5


async def test_a_format_change_mid_utterance_keeps_every_sample(realtime, upstreams):
    settings = make_settings(realtime)
    transcription = await RealtimeTranscriber(settings, upstreams["STT"]).open("gpt-4o-transcribe", None)
    try:
        await stream(transcription, tone(0.5, 16000), PcmFormat(16000))
        await stream(transcription, tone(0.5, 48000), PcmFormat(48000))
        pieces = [piece async for piece in transcription.finish()]
    finally:
        await transcription.close()
    assert pieces[-1][0] is True
    assert abs(len(realtime.connections[0].committed) / (2 * RATE) - 1.0) < 0.01
    assert "language" not in realtime.connections[0].session["audio"]["input"]["transcription"]


async def test_stt_extra_body_is_deep_merged_into_the_session(realtime, upstreams):
    extra = (
        '{"audio": {"input": {"noise_reduction": {"type": "near_field"}, "transcription": {"delay": "low"}}},'
        ' "include": ["item.input_audio_transcription.logprobs"]}'
    )
    settings = make_settings(realtime, env={"STT_REALTIME_EXTRA_BODY": extra})
    await transcribe(settings, upstreams["STT"], tone(0.3, 16000), PcmFormat(16000))
    session = realtime.connections[0].session
    assert session["include"] == ["item.input_audio_transcription.logprobs"]
    audio_input = session["audio"]["input"]
    assert audio_input["noise_reduction"] == {"type": "near_field"}
    assert audio_input["transcription"] == {"model": "gpt-4o-transcribe", "language": "en", "delay": "low"}
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["turn_detection"] is None


def test_deep_merge_replaces_non_objects_and_keeps_the_base():
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    merged = deep_merge(base, {"a": {"c": {"x": 3}, "b": None}, "e": [2]})
    assert merged == {"a": {"b": None, "c": {"d": 2, "x": 3}}, "e": [2]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}


async def test_too_little_audio_gives_an_empty_transcript_without_a_commit(realtime, upstreams):
    settings = make_settings(realtime)
    pieces = await transcribe(settings, upstreams["STT"], tone(0.05, 16000), PcmFormat(16000))
    assert pieces == [(True, "")]
    assert "input_audio_buffer.commit" not in realtime.connections[0].event_types


async def test_close_is_idempotent_and_ends_the_socket(realtime, upstreams):
    settings = make_settings(realtime)
    transcription = await RealtimeTranscriber(settings, upstreams["STT"]).open("gpt-4o-transcribe", "en")
    await transcription.send_audio(tone(0.2, 16000), PcmFormat(16000))
    await transcription.close()
    await transcription.close()
    for _ in range(100):
        if not realtime._sockets:
            break
        await asyncio.sleep(0.01)
    assert not realtime._sockets


# --- faults, speech to text ---------------------------------------------------------------------------


def assert_safe(err: UpstreamError, upstream: Upstream, *words: str) -> None:
    text = str(err)
    assert TEST_KEY not in text and "wrong-key" not in text
    assert upstream.display_url in text
    for word in words:
        assert word in text, text


async def expect_stt_failure(settings: Settings, upstream: Upstream, limit: float = 3.0) -> UpstreamError:
    began = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await transcribe(settings, upstream, tone(0.5, 16000), PcmFormat(16000))
    assert time.monotonic() - began < limit
    return caught.value


async def test_stt_wrong_key_is_refused_at_the_upgrade(realtime):
    upstream = make_upstream(realtime.url, "STT", key="wrong-key")
    try:
        err = await expect_stt_failure(make_settings(realtime), upstream)
    finally:
        await upstream.close()
    assert_safe(err, upstream, "401", "Unauthorized")
    assert err.status == 401
    assert not realtime.connections


async def test_stt_connection_refused(realtime):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstream = make_upstream(f"http://127.0.0.1:{port}/v1")
    try:
        err = await expect_stt_failure(make_settings(realtime), upstream)
    finally:
        await upstream.close()
    assert_safe(err, upstream, "refused or unreachable")


async def test_stt_upgrade_that_never_answers_times_out(realtime):
    async def accept_and_stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection open until the client gives up
        writer.close()

    silent = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    upstream = make_upstream(f"http://127.0.0.1:{port}/v1")
    began = time.monotonic()
    try:
        err = await expect_stt_failure(make_settings(realtime), upstream)
    finally:
        await upstream.close()
        silent.close()
    # The handshake is an HTTP answer: the session's read time-out bounds it, as for any request.
    assert READ_TIMEOUT * 0.9 < time.monotonic() - began
    assert_safe(err, upstream, "did not answer in time")


@pytest.mark.parametrize("event", ["session.update", "input_audio_buffer.commit"])
async def test_stt_error_event_is_reported(realtime, upstreams, event):
    realtime.fault = RealtimeFault(error_on=event, error_message="Invalid value: 'gpt-4o-transcribe'")
    err = await expect_stt_failure(make_settings(realtime), upstreams["STT"])
    assert_safe(err, upstreams["STT"], "reported an error", "Invalid value")


async def test_stt_error_during_audio_stops_the_sending(realtime, upstreams):
    realtime.fault = RealtimeFault(error_on="session.update")
    transcription = await RealtimeTranscriber(make_settings(realtime), upstreams["STT"]).open("gpt-4o-transcribe", "en")
    try:
        with pytest.raises(UpstreamError, match="simulated failure"):
            for _ in range(200):
                await transcription.send_audio(tone(0.02, 16000), PcmFormat(16000))
                await asyncio.sleep(0.005)
    finally:
        await transcription.close()


async def test_stt_early_close(realtime, upstreams):
    realtime.fault = RealtimeFault(close_on="input_audio_buffer.commit")
    err = await expect_stt_failure(make_settings(realtime), upstreams["STT"])
    assert_safe(err, upstreams["STT"], "closed the connection")


async def test_stt_silence_times_out(realtime, upstreams):
    realtime.fault = RealtimeFault(silent_on="input_audio_buffer.commit")
    began = time.monotonic()
    err = await expect_stt_failure(make_settings(realtime), upstreams["STT"])
    assert TIMEOUT * 0.9 < time.monotonic() - began
    assert_safe(err, upstreams["STT"], "did not answer in time")


async def test_stt_failed_transcription_is_reported(realtime, upstreams):
    realtime.fault = RealtimeFault(transcription_failed=True, error_message="Audio could not be understood")
    err = await expect_stt_failure(make_settings(realtime), upstreams["STT"])
    assert_safe(err, upstreams["STT"], "could not transcribe", "Audio could not be understood")


# --- text to speech -----------------------------------------------------------------------------------


async def synthesize(settings: Settings, upstream: Upstream, text: str = "Hello there, how are you?"):
    return [piece async for piece in RealtimeSynthesizer(settings, upstream).synthesize(text, VOICE)]


@pytest.mark.parametrize("beta_names", [False, True], ids=["ga", "beta"])
async def test_speech_streams_audio_deltas(realtime, upstreams, beta_names):
    realtime.beta_names = beta_names
    text = "Hello there, how are you?"
    pieces = await synthesize(make_settings(realtime, "--tts-instructions", "Cheerful"), upstreams["TTS"], text)
    assert len(pieces) > 1  # streamed, not gathered
    assert {fmt for fmt, _ in pieces} == {PcmFormat(24000)}
    pcm = b"".join(chunk for _, chunk in pieces)
    assert abs(len(pcm) / (2 * RATE) - len(text) * 0.02) < 0.01
    conn = realtime.connections[0]
    assert conn.query == {"model": "gpt-realtime"}
    assert conn.spoken_text == text
    assert conn.event_types == ["session.update", "conversation.item.create", "response.create"]
    session = conn.session
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"] == {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}
    assert "word for word" in session["instructions"] and "Cheerful" in session["instructions"]


async def test_speech_is_resampled_to_the_configured_rate(realtime, upstreams):
    text = "Resample me please."
    pieces = await synthesize(make_settings(realtime, "--tts-sample-rate", "16000"), upstreams["TTS"], text)
    assert {fmt for fmt, _ in pieces} == {PcmFormat(16000)}
    pcm = b"".join(chunk for _, chunk in pieces)
    assert abs(len(pcm) / (2 * 16000) - len(text) * 0.02) < 0.01
    assert abs(dominant_frequency(pcm, 16000) - 440) < 5


async def test_tts_extra_body_and_speed_are_merged(realtime, upstreams):
    extra = '{"audio": {"output": {"speed": 1.2}}, "instructions": "Say it verbatim.", "max_output_tokens": 2000}'
    settings = make_settings(realtime, "--tts-speed", "3.0", env={"TTS_REALTIME_EXTRA_BODY": extra})
    await synthesize(settings, upstreams["TTS"])
    session = realtime.connections[0].session
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
        "speed": 1.2,
    }
    assert session["instructions"] == "Say it verbatim."
    assert session["max_output_tokens"] == 2000


async def test_speed_is_clamped_to_the_realtime_range(realtime, upstreams):
    await synthesize(make_settings(realtime, "--tts-speed", "3.0"), upstreams["TTS"])
    assert realtime.connections[0].session["audio"]["output"]["speed"] == 1.5


async def test_empty_text_makes_no_connection(realtime, upstreams):
    assert await synthesize(make_settings(realtime), upstreams["TTS"], "  ") == []
    assert not realtime.connections


async def test_stopping_early_closes_the_socket(realtime, upstreams):
    speech = RealtimeSynthesizer(make_settings(realtime), upstreams["TTS"]).synthesize("A long sentence. " * 10, VOICE)
    async for _ in speech:
        break
    await speech.aclose()
    for _ in range(100):
        if not realtime._sockets:
            break
        await asyncio.sleep(0.01)
    assert not realtime._sockets


# --- faults, text to speech ---------------------------------------------------------------------------


async def expect_tts_failure(settings: Settings, upstream: Upstream, limit: float = 3.0) -> UpstreamError:
    began = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await synthesize(settings, upstream)
    assert time.monotonic() - began < limit
    return caught.value


async def test_tts_wrong_key_is_refused_at_the_upgrade(realtime):
    upstream = make_upstream(realtime.url, "TTS", key="wrong-key")
    try:
        err = await expect_tts_failure(make_settings(realtime), upstream)
    finally:
        await upstream.close()
    assert_safe(err, upstream, "TTS upstream", "401")


async def test_tts_other_refused_upgrade_statuses(realtime, upstreams):
    realtime.fault = RealtimeFault(status=404)
    err = await expect_tts_failure(make_settings(realtime), upstreams["TTS"])
    assert_safe(err, upstreams["TTS"], "404 Not Found")
    assert err.status == 404


async def test_tts_error_event(realtime, upstreams):
    realtime.fault = RealtimeFault(error_on="response.create", error_message="Voice 'marin' is not available")
    err = await expect_tts_failure(make_settings(realtime), upstreams["TTS"])
    assert_safe(err, upstreams["TTS"], "reported an error", "Voice 'marin' is not available")


async def test_tts_early_close(realtime, upstreams):
    realtime.fault = RealtimeFault(close_on="response.create")
    err = await expect_tts_failure(make_settings(realtime), upstreams["TTS"])
    assert_safe(err, upstreams["TTS"], "closed the connection")


async def test_tts_silence_times_out(realtime, upstreams):
    realtime.fault = RealtimeFault(silent_on="response.create")
    began = time.monotonic()
    err = await expect_tts_failure(make_settings(realtime), upstreams["TTS"])
    assert TIMEOUT * 0.9 < time.monotonic() - began
    assert_safe(err, upstreams["TTS"], "did not answer in time")


async def test_tts_stall_after_first_audio_hits_the_read_timeout(realtime, upstreams):
    realtime.fault = RealtimeFault(stall_after_first_delta=True)
    began = time.monotonic()
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for piece in RealtimeSynthesizer(make_settings(realtime), upstreams["TTS"]).synthesize(
            "Hello there.", VOICE
        ):
            received.append(piece)
    elapsed = time.monotonic() - began
    assert len(received) == 1
    assert READ_TIMEOUT * 0.9 < elapsed < TIMEOUT  # the read time-out, not the first-answer one
    assert_safe(caught.value, upstreams["TTS"], "did not answer in time")


async def test_tts_failed_response(realtime, upstreams):
    realtime.fault = RealtimeFault(response_failed=True, error_message="insufficient_quota")
    err = await expect_tts_failure(make_settings(realtime), upstreams["TTS"])
    assert_safe(err, upstreams["TTS"], "could not speak the text", "insufficient_quota")
