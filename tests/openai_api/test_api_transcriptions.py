"""POST /v1/audio/transcriptions (and /translations) through the openai SDK.

The Wyoming test server's "transcript" describes the audio it was sent, so each test checks that the
upload arrived decoded, resampled to 16 kHz mono, and still carrying its tone.
"""

from __future__ import annotations

import io
import re

import aiohttp
import av
import openai
import pytest
from audio_samples import encode, tone, wav
from conftest import Api, StartApi
from spec_check import assert_conforms, assert_error_shape, response_schema, schema
from tone_wyoming import ToneServer

SECONDS = 1.5
BYTES_AT_16K = int(SECONDS * 16000) * 2


def described(text: str) -> dict[str, object]:
    """What the tone server says it received."""
    match = re.search(
        r"received (\d+) bytes, at (\d+) Hz width (\d+) channels (\d+), tone (\d+) Hz, model (\S+), language (\S+)",
        text,
    )
    assert match, text
    size, rate, width, channels, freq = (int(match.group(i)) for i in range(1, 6))
    return {"bytes": size, "rate": rate, "width": width, "channels": channels, "tone": freq,
            "model": match.group(6), "language": match.group(7).rstrip(",")}  # fmt: skip


def assert_arrived(text: str, seconds: float = SECONDS, freq: int = 440) -> dict[str, object]:
    got = described(text)
    assert (got["rate"], got["width"], got["channels"]) == (16000, 2, 1)
    # Codecs pad (mp3, aac): allow a little more audio, never less than ~all of it.
    assert int(seconds * 16000) * 2 * 0.98 <= got["bytes"] <= (seconds + 0.1) * 16000 * 2, got
    assert abs(got["tone"] - freq) <= 5, got
    return got


def _container(fmt: str, codec: str, rate: int, pcm: bytes) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = rate
        for converted in av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate).resample(
            frame
        ):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def upload(kind: str) -> tuple[str, bytes]:
    """(file name, bytes) of SECONDS of a 440 Hz tone in ``kind``."""
    if kind == "wav_44k_stereo":
        return "a.wav", wav(tone(SECONDS, 44100, channels=2), 44100, channels=2)
    if kind == "wav_8k":
        return "a.wav", wav(tone(SECONDS, 8000), 8000)
    if kind == "webm":
        return "a.webm", _container("webm", "libopus", 48000, tone(SECONDS, 48000))
    if kind == "m4a":
        return "a.m4a", _container("ipod", "aac", 44100, tone(SECONDS, 44100))
    rate = 48000 if kind == "opus" else 44100
    name = {"opus": "a.ogg", "wav_f32": "a.wav", "wav_s24": "a.wav"}.get(kind, f"a.{kind}")
    return name, encode(kind, tone(SECONDS, rate), rate)


INPUTS = ("wav_44k_stereo", "wav_8k", "wav_f32", "wav_s24", "mp3", "flac", "opus", "aac", "webm", "m4a")


@pytest.mark.parametrize("kind", INPUTS)
async def test_every_input_format_arrives_as_16k_mono(api: Api, kind: str) -> None:
    result = await api.client.audio.transcriptions.create(model="echo-asr-small", file=upload(kind))
    assert_arrived(result.text)


async def test_json_response_conforms(api: Api) -> None:
    raw = await api.client.audio.transcriptions.with_raw_response.create(model="echo-asr", file=upload("flac"))
    body = raw.http_response.json()
    assert_conforms(body, response_schema("/audio/transcriptions", "post", "application/json"))
    assert_conforms(body, schema("CreateTranscriptionResponseJson"))
    assert_arrived(body["text"])
    assert body["usage"] == {"type": "duration", "seconds": SECONDS}


async def test_text_response(api: Api) -> None:
    text = await api.client.audio.transcriptions.create(model="echo-asr", file=upload("mp3"), response_format="text")
    assert isinstance(text, str) and text.endswith("\n")
    assert_arrived(text)


async def test_verbose_json_response_conforms(api: Api) -> None:
    raw = await api.client.audio.transcriptions.with_raw_response.create(
        model="echo-asr", file=upload("wav_8k"), response_format="verbose_json", language="de",
        timestamp_granularities=["segment"],
    )  # fmt: skip
    body = raw.http_response.json()
    assert_conforms(body, response_schema("/audio/transcriptions", "post", "application/json"))
    assert_conforms(body, schema("CreateTranscriptionResponseVerboseJson"))
    assert body["language"] == "de" and body["duration"] == SECONDS
    assert body["segments"][0]["start"] == 0 and body["segments"][0]["end"] == SECONDS
    assert_arrived(body["text"])


async def test_srt_response(api: Api) -> None:
    srt = await api.client.audio.transcriptions.create(model="echo-asr", file=upload("flac"), response_format="srt")
    lines = srt.splitlines()
    assert lines[0] == "1" and lines[1] == "00:00:00,000 --> 00:00:01,500"
    assert_arrived(lines[2])


async def test_vtt_response(api: Api) -> None:
    vtt = await api.client.audio.transcriptions.create(model="echo-asr", file=upload("flac"), response_format="vtt")
    lines = vtt.splitlines()
    assert lines[0] == "WEBVTT" and lines[2] == "00:00:00.000 --> 00:00:01.500"
    assert_arrived(lines[3])


async def test_language_and_prompt_reach_the_wyoming_server(api: Api, tone_server: ToneServer) -> None:
    result = await api.client.audio.transcriptions.create(
        model="echo-asr-small", file=upload("flac"), language="de", prompt="Tonleiter"
    )
    sent = tone_server.received.transcribes[-1]
    assert (sent.name, sent.language, sent.context) == ("echo-asr-small", "de", {"prompt": "Tonleiter"})
    assert described(result.text)["language"] == "de" and "prompt Tonleiter" in result.text


async def test_program_name_and_openai_name_let_the_server_choose_its_model(api: Api, tone_server: ToneServer) -> None:
    for model in ("echo-asr", "whisper-1"):
        result = await api.client.audio.transcriptions.create(model=model, file=upload("flac"))
        assert described(result.text)["model"] == "None"
        assert tone_server.received.transcribes[-1].name is None


async def _stream_events(api: Api, **kwargs: object) -> list[dict]:
    stream = await api.client.audio.transcriptions.create(model="echo-asr", file=upload("flac"), stream=True, **kwargs)
    events = [event.model_dump(exclude_none=True) async for event in stream]
    for event in events:
        assert_conforms(event, schema("CreateTranscriptionResponseStreamEvent"))
    return events


async def test_stream_relays_wyoming_transcript_chunks(api: Api) -> None:
    events = await _stream_events(api)
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) == 5  # one per transcript-chunk the server streamed
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(deltas) == events[-1]["text"]
    assert_arrived(events[-1]["text"])


async def test_stream_from_a_server_without_chunks_is_one_delta(start_api: StartApi) -> None:
    server = await ToneServer(streaming=False).start()
    try:
        api = await start_api([server.uri])
        events = await _stream_events(api, response_format="text")
        assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.done"]
        assert events[0]["delta"] == events[1]["text"]
        assert_arrived(events[1]["text"])
    finally:
        await server.stop()


async def test_stream_content_type(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", upload("flac")[1], filename="a.flac")
        form.add_field("model", "echo-asr")
        form.add_field("stream", "true")
        async with session.post(api.url + "/audio/transcriptions", data=form) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"


# --- errors ---------------------------------------------------------------------------------------


async def _form_post(api: Api, fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[int, dict]:
    form = aiohttp.FormData(default_to_multipart=True)
    if file is not None:
        form.add_field("file", file[1], filename=file[0])
    for name, value in fields.items():
        form.add_field(name, value)
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + "/audio/transcriptions", data=form) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("fields", "file", "status", "param", "code"),
    [
        ({"model": "echo-asr"}, ("a.wav", b"this is not audio at all" * 50), 400, "file", "invalid_audio"),
        ({"model": "echo-asr"}, ("a.wav", b""), 400, "file", "invalid_audio"),
        ({"model": "echo-asr"}, None, 400, "file", "missing_required_parameter"),
        ({}, ("a.flac", None), 400, "model", "missing_required_parameter"),
        ({"model": "nope"}, ("a.flac", None), 404, "model", "model_not_found"),
        ({"model": "tone-tts"}, ("a.flac", None), 400, "model", "invalid_model"),
        ({"model": "echo-asr", "response_format": "docx"}, ("a.flac", None), 400, "response_format", "invalid_value"),
        ({"model": "echo-asr", "response_format": "srt", "stream": "true"}, ("a.flac", None), 400, "stream", "unsupported_value"),
        ({"model": "echo-asr", "timestamp_granularities[]": "word"}, ("a.flac", None), 400, "timestamp_granularities", "unsupported_value"),
        ({"model": "echo-asr", "include[]": "logprobs"}, ("a.flac", None), 400, "include", "unsupported_value"),
        ({"model": "echo-asr", "temperature": "hot"}, ("a.flac", None), 400, "temperature", "invalid_value"),
    ],
)  # fmt: skip
async def test_bad_requests_get_openai_errors(
    api: Api, fields: dict[str, str], file: tuple[str, bytes | None] | None, status: int, param: str, code: str
) -> None:
    if file is not None and file[1] is None:
        file = upload("flac")
    got, body = await _form_post(api, fields, file)
    assert got == status, body
    error = assert_error_shape(body, status)
    assert (error["param"], error["code"]) == (param, code)


async def test_json_body_instead_of_multipart(api: Api) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + "/audio/transcriptions", json={"model": "echo-asr"}) as response,
    ):
        assert response.status == 400
        assert assert_error_shape(await response.json(), 400)["code"] == "invalid_content_type"


async def test_oversized_upload_is_a_413(start_api: StartApi, tone_server: ToneServer) -> None:
    api = await start_api([tone_server.uri], max_upload_mb=0.05)
    with pytest.raises(openai.APIStatusError) as caught:
        await api.client.audio.transcriptions.create(model="echo-asr", file=upload("wav_44k_stereo"))
    assert caught.value.status_code == 413
    assert "0.05 MB" in caught.value.message
    assert_error_shape({"error": caught.value.body}, 413)


async def test_oversized_upload_without_content_length_is_a_413(start_api: StartApi, tone_server: ToneServer) -> None:
    api = await start_api([tone_server.uri], max_upload_mb=0.05)

    async def body():  # chunked: the limit must hold while reading, not only from the header
        boundary = b"--x\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 8192
        yield b"\r\n--x--\r\n"

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            api.url + "/audio/transcriptions", data=body(), headers={"Content-Type": "multipart/form-data; boundary=x"}
        ) as response,
    ):
        assert response.status == 413
        assert_error_shape(await response.json(), 413)


async def test_too_long_audio_is_refused(start_api: StartApi, tone_server: ToneServer) -> None:
    api = await start_api([tone_server.uri], max_audio_seconds=1)
    with pytest.raises(openai.BadRequestError) as caught:
        await api.client.audio.transcriptions.create(model="echo-asr", file=upload("flac"))
    assert caught.value.code == "audio_too_long"


async def test_wyoming_server_down_is_a_fast_503(start_api: StartApi) -> None:
    server = await ToneServer().start()
    api = await start_api([server.uri])
    await server.stop()
    with pytest.raises(openai.APIStatusError) as caught:
        await api.client.audio.transcriptions.create(model="echo-asr", file=upload("flac"))
    assert caught.value.status_code == 503
    assert_error_shape({"error": caught.value.body}, 503)


async def test_translations_are_refused_honestly(api: Api) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await api.client.audio.translations.create(model="whisper-1", file=upload("flac"))
    assert "Translation is not available" in caught.value.message
    assert caught.value.code == "unsupported_operation"
