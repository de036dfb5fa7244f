"""POST /v1/audio/speech through the official openai SDK, against the tone-speaking Wyoming server."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest
from audio_check import decode, sse_audio, sse_events
from conftest import Api, StartApi
from spec_check import assert_conforms, assert_error_shape, schema
from tone_wyoming import SECONDS_PER_WORD, SilentServer, ToneServer

FOUR_WORDS = "one two three four"  # one second of tone
FORMATS = ("wav", "pcm", "mp3", "flac", "opus", "aac")
# What a player sees: OpenAI's pcm is 24 kHz; opus decodes at 48 kHz; the rest keep Wyoming's 22050.
EXPECTED_RATE = {"wav": 22050, "pcm": 24000, "mp3": 22050, "flac": 22050, "opus": 48000, "aac": 22050}
CONTENT_TYPE = {
    "wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg", "flac": "audio/flac", "opus": "audio/ogg", "aac": "audio/aac",
}  # fmt: skip
# Codecs add priming/padding (mp3, aac) or drop a few ms at the edges (tempo): a tolerance in seconds.
SLACK = 0.09


def assert_tone(data: bytes, response_format: str, seconds: float, frequency: float) -> None:
    decoded = decode(data, response_format)
    assert decoded.rate == EXPECTED_RATE[response_format]
    assert abs(decoded.seconds - seconds) <= SLACK + 0.02 * seconds, decoded
    assert abs(decoded.frequency - frequency) <= 0.03 * frequency + 3, decoded


@pytest.mark.parametrize("response_format", FORMATS)
async def test_every_format_decodes_to_the_spoken_tone(api: Api, response_format: str) -> None:
    raw = await api.client.audio.speech.with_raw_response.create(
        model="tone-tts", voice="low", input=FOUR_WORDS, response_format=response_format
    )
    assert raw.headers["content-type"] == CONTENT_TYPE[response_format]
    assert raw.headers.get("transfer-encoding") == "chunked"  # as the spec says: streamed as it is made
    assert_tone(raw.content, response_format, 4 * SECONDS_PER_WORD, 220)


@pytest.mark.parametrize("response_format", FORMATS)
async def test_sse_stream_carries_the_audio_in_deltas_then_done(api: Api, response_format: str) -> None:
    raw = await api.client.audio.speech.with_raw_response.create(
        model="tone-tts",
        voice="high",
        input=f"{FOUR_WORDS} {FOUR_WORDS}",
        response_format=response_format,
        stream_format="sse",
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.content)
    for event in events:
        assert_conforms(event, schema("CreateSpeechResponseStreamEvent"))
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    assert all(e["type"] == "speech.audio.delta" for e in events[:-1]) and len(events) > 2
    assert_tone(sse_audio(events), response_format, 8 * SECONDS_PER_WORD, 880)


async def test_audio_stream_arrives_in_pieces(api: Api) -> None:
    # 5 s of speech in 100 ms Wyoming chunks: the body must come as several reads, not one at the end.
    async with api.client.audio.speech.with_streaming_response.create(
        model="tone-tts", voice="low", input=" ".join(["word"] * 20), response_format="pcm"
    ) as response:
        pieces = [piece async for piece in response.iter_bytes()]
    assert len(pieces) > 3
    assert abs(sum(map(len, pieces)) / 48000 - 5.0) < 0.01


@pytest.mark.parametrize(("speed", "response_format"), [(2.0, "wav"), (0.5, "mp3"), (4.0, "pcm"), (0.25, "flac")])
async def test_speed_changes_the_tempo_not_the_pitch(api: Api, speed: float, response_format: str) -> None:
    data = await api.client.audio.speech.create(
        model="tone-tts", voice="low", input=FOUR_WORDS, response_format=response_format, speed=speed
    )
    decoded = decode(data.content, response_format)
    assert abs(decoded.seconds - 1.0 / speed) <= 0.05 / speed + SLACK, decoded
    assert abs(decoded.frequency - 220) < 10, decoded


async def test_openai_model_and_voice_names_mean_the_defaults(api: Api, tone_server: ToneServer) -> None:
    data = await api.client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="wav")
    assert_tone(data.content, "wav", SECONDS_PER_WORD, 220)  # the first voice, "low"
    assert tone_server.received.synthesizes[-1].voice.name == "low"


async def test_voice_as_an_object_with_an_id(api: Api) -> None:
    data = await api.client.audio.speech.create(
        model="tone-tts", voice={"id": "high"}, input="hi", response_format="wav"
    )
    assert_tone(data.content, "wav", SECONDS_PER_WORD, 880)


async def test_speaker_of_a_multi_speaker_voice(api: Api, tone_server: ToneServer) -> None:
    data = await api.client.audio.speech.create(model="tone-tts", voice="duo:b", input="hi", response_format="wav")
    assert_tone(data.content, "wav", SECONDS_PER_WORD, 880)
    sent = tone_server.received.synthesizes[-1].voice
    assert (sent.name, sent.speaker) == ("duo", "b")


async def test_stereo_16k_wyoming_audio_becomes_mono(api: Api) -> None:
    data = await api.client.audio.speech.create(
        model="tone-tts", voice="low", input="please stereo", response_format="wav"
    )
    decoded = decode(data.content, "wav")
    assert decoded.rate == 16000 and abs(decoded.seconds - 0.5) < 0.01 and abs(decoded.frequency - 220) < 5


# --- errors ---------------------------------------------------------------------------------------


async def _post(api: Api, body: dict, path: str = "/audio/speech") -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + path, json=body, headers={"Authorization": "Bearer x"}) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "voice": "low", "input": "hi"}, 404, "model"),
        ({"model": "tone-tts", "voice": "nobody", "input": "hi"}, 400, "voice"),
        ({"model": "tone-tts", "voice": "duo:z", "input": "hi"}, 400, "voice"),
        ({"model": "tone-tts", "voice": "low", "input": "hi", "response_format": "ogg"}, 400, "response_format"),
        ({"model": "tone-tts", "voice": "low", "input": "hi", "stream_format": "chunks"}, 400, "stream_format"),
        ({"model": "tone-tts", "voice": "low", "input": "hi", "speed": 5}, 400, "speed"),
        ({"model": "tone-tts", "voice": "low", "input": "hi", "speed": "fast"}, 400, "speed"),
        ({"model": "tone-tts", "voice": "low", "input": ""}, 400, "input"),
        ({"model": "tone-tts", "voice": "low", "input": "x" * 4097}, 400, "input"),
        ({"model": "tone-tts", "voice": "low"}, 400, "input"),
        ({"model": "tone-tts", "input": "hi"}, 400, "voice"),
        ({"voice": "low", "input": "hi"}, 400, "model"),
        ({"model": "echo-asr", "voice": "low", "input": "hi"}, 400, "model"),
    ],
)
async def test_bad_requests_get_openai_errors(api: Api, body: dict, status: int, param: str) -> None:
    got, answer = await _post(api, body)
    assert got == status
    assert assert_error_shape(answer, status)["param"] == param


async def test_sdk_raises_typed_errors(api: Api) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await api.client.audio.speech.create(model="nope", voice="low", input="hi")
    assert "tone-tts" in caught.value.message  # names the models that exist
    with pytest.raises(openai.BadRequestError):
        await api.client.audio.speech.create(model="tone-tts", voice="nobody", input="hi")


async def test_body_that_is_not_json(api: Api) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            api.url + "/audio/speech", data=b"{not json", headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status == 400
        assert assert_error_shape(await response.json(), 400)["code"] == "invalid_json"


async def test_wyoming_error_event_is_a_502_with_its_text(api: Api) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="please fail")
    assert caught.value.status_code == 502
    assert "out of tune" in caught.value.message
    assert_error_shape(caught.value.body and {"error": caught.value.body}, 502)


async def test_wyoming_server_down_is_a_fast_503(start_api: StartApi) -> None:
    server = await ToneServer().start()
    api = await start_api([server.uri])
    await server.stop()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi")
    assert caught.value.status_code == 503
    assert server.uri in caught.value.message
    assert time.monotonic() - started < 1.0


async def test_hung_wyoming_server_is_a_504_within_the_read_timeout(api: Api) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="please hang")
    assert caught.value.status_code == 504
    assert 1.5 < time.monotonic() - started < 4.0  # read_timeout is 2 s in these tests


async def test_server_that_never_answers_describe(start_api: StartApi) -> None:
    silent = await SilentServer().start()
    try:
        started = time.monotonic()
        api = await start_api([silent.uri], read_timeout=0.5)
        with pytest.raises(openai.APIStatusError) as caught:
            await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi")
        assert caught.value.status_code == 503 and silent.uri in caught.value.message
        assert time.monotonic() - started < 3.0
    finally:
        await silent.stop()


async def test_dropped_connection_mid_audio_truncates_the_stream_visibly(api: Api) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            api.url + "/audio/speech",
            json={"model": "tone-tts", "voice": "low", "input": "please drop it now", "response_format": "pcm"},
        ) as response,
    ):
        assert response.status == 200  # audio had started
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_failure_before_the_encoder_gave_any_byte_is_still_a_status(api: Api) -> None:
    # FLAC holds back its first frame (4608 samples) longer than the 100 ms sent before the drop.
    with pytest.raises(openai.InternalServerError) as caught:
        await api.client.audio.speech.create(
            model="tone-tts", voice="low", input="please drop it now", response_format="flac", stream_format="sse"
        )
    assert caught.value.status_code == 502


@pytest.mark.parametrize("response_format", ["pcm", "mp3"])
async def test_dropped_connection_mid_sse_ends_with_an_error_event(api: Api, response_format: str) -> None:
    raw = await api.client.audio.speech.with_raw_response.create(
        model="tone-tts", voice="low", input="please drop it now", response_format=response_format, stream_format="sse"
    )
    events = sse_events(raw.content)
    assert events[0]["type"] == "speech.audio.delta"
    error = assert_error_shape(events[-1], 502)
    assert error["code"] == "wyoming_error"


async def test_client_going_away_closes_the_wyoming_connection(api: Api, tone_server: ToneServer) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            api.url + "/audio/speech",
            json={"model": "tone-tts", "voice": "low", "input": " ".join(["word"] * 80), "response_format": "pcm"},
        )
        await response.content.readexactly(4800)
        before = tone_server.received.disconnects
        response.close()
    # The API stops asking for audio nobody will hear: its Wyoming connection ends with the client's.
    for _ in range(50):
        if tone_server.received.disconnects > before:
            break
        await asyncio.sleep(0.02)
    assert tone_server.received.disconnects > before
    data = await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="wav")
    assert_tone(data.content, "wav", SECONDS_PER_WORD, 220)


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
async def test_client_leaving_while_a_codec_is_encoding(api: Api, stream_format: str) -> None:
    # The encoder runs in a worker thread: closing it under that thread used to crash the process.
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            response = await session.post(
                api.url + "/audio/speech",
                json={"model": "tone-tts", "voice": "low", "input": " ".join(["word"] * 40),
                      "response_format": "mp3", "stream_format": stream_format},
            )  # fmt: skip
            await response.content.readany()
            response.close()
    await asyncio.sleep(0.3)
    data = await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="flac")
    assert_tone(data.content, "flac", SECONDS_PER_WORD, 220)


# --- kept-alive Wyoming connections ---------------------------------------------------------------


async def test_connections_are_reused_after_complete_answers(api: Api, tone_server: ToneServer) -> None:
    before = tone_server.received.connections
    for _ in range(3):
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
    assert tone_server.received.connections == before + 1


async def test_connection_closed_while_idle_is_replaced_transparently(start_api: StartApi) -> None:
    server = await ToneServer().start()
    api = await start_api([server.uri])
    try:
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
        await server.stop()  # closes the kept-alive connection from the server's side
        await asyncio.sleep(0.05)
        await server.start()
        data = await api.client.audio.speech.create(model="tone-tts", voice="low", input="hi", response_format="pcm")
        assert len(data.content) == 12000
    finally:
        await server.stop()


async def test_server_hanging_up_on_a_second_request_is_retried_on_a_fresh_connection(start_api: StartApi) -> None:
    server = await ToneServer(one_request_per_connection=True).start()
    api = await start_api([server.uri])
    try:
        for _ in range(3):
            data = await api.client.audio.speech.create(
                model="tone-tts", voice="low", input="hi", response_format="pcm"
            )
            assert len(data.content) == 12000
        assert len(server.received.synthesizes) == 3
    finally:
        await server.stop()


async def test_failed_answers_do_not_leave_their_connection_for_the_next_request(api: Api) -> None:
    with pytest.raises(openai.InternalServerError):
        await api.client.audio.speech.create(model="tone-tts", voice="low", input="please fail")
    data = await api.client.audio.speech.create(model="tone-tts", voice="high", input="hi", response_format="wav")
    assert_tone(data.content, "wav", SECONDS_PER_WORD, 880)


async def test_concurrent_requests_each_get_their_own_audio(api: Api, tone_server: ToneServer) -> None:
    voices = ["low", "high"] * 8

    async def speak(voice: str) -> float:
        data = await api.client.audio.speech.create(
            model="tone-tts", voice=voice, input="one two", response_format="wav"
        )
        decoded = decode(data.content, "wav")
        assert abs(decoded.seconds - 0.5) < 0.01
        return decoded.frequency

    frequencies = await asyncio.gather(*(speak(v) for v in voices))
    for voice, frequency in zip(voices, frequencies, strict=True):
        assert abs(frequency - (220 if voice == "low" else 880)) < 10
    # Kept-alive connections are reused afterwards, up to the idle limit.
    before = tone_server.received.connections
    await asyncio.gather(*(speak(v) for v in voices[:8]))
    assert tone_server.received.connections == before


async def test_program_selected_on_a_server_with_two_tts_programs(start_api: StartApi) -> None:
    server = await ToneServer(two_tts_programs=True).start()
    try:
        api = await start_api([server.uri])
        for model, pitch in [("tone-tts-fifth", 330), ("tone-tts", 220), ("tone-tts-fifth", 330)]:
            data = await api.client.audio.speech.create(model=model, voice="low", input="hi", response_format="wav")
            assert_tone(data.content, "wav", SECONDS_PER_WORD, pitch)
        # One connection per program, each named once: the selection lasts as long as the connection.
        assert server.received.selected == ["tone-tts-fifth", "tone-tts"]
    finally:
        await server.stop()


async def test_clean_text_gives_the_wyoming_server_only_the_words(start_api: StartApi, tone_server: ToneServer) -> None:
    answer = "**Sure!** Open [the docs](https://example.com/docs) 📖 and run `make`."
    plain = await start_api([tone_server.uri])
    await plain.client.audio.speech.create(model="tone-tts", voice="low", input=answer, response_format="wav")
    assert tone_server.received.synthesizes[-1].text == answer  # off by default: the text as sent
    cleaning = await start_api([tone_server.uri], clean_text=True)
    await cleaning.client.audio.speech.create(model="tone-tts", voice="low", input=answer, response_format="wav")
    assert tone_server.received.synthesizes[-1].text == "Sure! Open the docs and run make."
    with pytest.raises(openai.BadRequestError, match="nothing to speak"):
        await cleaning.client.audio.speech.create(model="tone-tts", voice="low", input="👍 **", response_format="wav")
