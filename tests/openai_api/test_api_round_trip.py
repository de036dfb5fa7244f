"""The full round trip: openai SDK → this API → our Wyoming proxy → the OpenAI-compatible upstream stand-in.

Uses the proxy fixtures of tests/conftest.py (``upstream``, ``start_proxy``); the stand-in checks
every request the proxy makes against the OpenAI spec, so this also proves the two directions
compose without breaking either contract.
"""

from __future__ import annotations

import re

import pytest
from audio_check import decode, sse_events
from audio_samples import encode, tone
from conftest import Api, StartApi
from harness import proxy_port
from spec_check import assert_conforms, schema

pytestmark = pytest.mark.usefixtures("upstream")
SECONDS_PER_CHARACTER = 0.02  # the stand-in's speech length (tests/upstream.py)


@pytest.fixture
async def chain(start_proxy, start_api: StartApi) -> Api:
    proxy = await start_proxy("--tts-voices", "alloy", "nova", "--stt-streaming-models", "gpt-4o-mini-transcribe")
    return await start_api([f"tcp://127.0.0.1:{proxy_port(proxy)}"])


async def test_models_and_voices_come_from_the_proxy(chain: Api) -> None:
    ids = {m.id async for m in chain.client.models.list()}
    assert {"gpt-4o-mini-transcribe", "whisper-1", "wyoming-openai"} <= ids
    voices = await chain.client.get("/audio/voices", cast_to=object)
    assert [v["id"] for v in voices["data"]] == ["alloy", "nova"]


@pytest.mark.parametrize("response_format", ["mp3", "wav", "opus"])
async def test_speech_through_the_proxy(chain: Api, response_format: str) -> None:
    text = "Round trips are the proof."
    data = await chain.client.audio.speech.create(
        model="tts-1", voice="nova", input=text, response_format=response_format
    )
    decoded = decode(data.content, response_format)
    assert abs(decoded.seconds - len(text) * SECONDS_PER_CHARACTER) < 0.1, decoded
    assert abs(decoded.frequency - 440) < 10, decoded  # the stand-in's tone survived both directions


async def test_speech_sse_through_the_proxy(chain: Api) -> None:
    raw = await chain.client.audio.speech.with_raw_response.create(
        model="wyoming-openai", voice="alloy", input="Streaming both ways.", response_format="pcm", stream_format="sse"
    )
    events = sse_events(raw.content)
    for event in events:
        assert_conforms(event, schema("CreateSpeechResponseStreamEvent"))
    assert events[-1]["type"] == "speech.audio.done"


async def test_transcription_through_the_proxy(chain: Api) -> None:
    upload = ("a.mp3", encode("mp3", tone(1.0, 44100), 44100))
    result = await chain.client.audio.transcriptions.create(model="whisper-1", file=upload, language="en")
    # The stand-in describes the WAV the proxy sent it: our 16 kHz mono, about a second of it.
    match = re.fullmatch(r"(\d+) frames at 16000 Hz, 16-bit, 1 ch", result.text)
    assert match and 16000 <= int(match.group(1)) <= 17700, result.text


async def test_streamed_transcription_through_the_proxy(chain: Api) -> None:
    upload = ("a.flac", encode("flac", tone(0.5, 16000), 16000))
    stream = await chain.client.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=upload, stream=True)
    events = [event.model_dump(exclude_none=True) async for event in stream]
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events if e["type"] == "transcript.text.delta") == events[-1]["text"]
    assert events[-1]["text"] == "8000 frames at 16000 Hz, 16-bit, 1 ch"
