"""The stand-in's request rules must say what the OpenAI spec says (skips without ../shared)."""

from __future__ import annotations

import pytest
import upstream as rules
import yaml
from harness import reference_file


@pytest.fixture(scope="module")
def schemas() -> dict:
    spec = yaml.safe_load(reference_file("openai-audio-openapi.yaml").read_text())
    return spec["components"]["schemas"]


def enum_of(schema: dict) -> set[str]:
    if "enum" in schema:
        return set(schema["enum"])
    return {value for option in schema.get("anyOf", []) for value in option.get("enum", [])}


def test_speech_rules(schemas):
    speech = schemas["CreateSpeechRequest"]
    assert speech["additionalProperties"] is False
    assert set(speech["properties"]) == rules.SPEECH_PROPERTIES
    assert set(speech["required"]) == rules.SPEECH_REQUIRED
    assert set(speech["properties"]["response_format"]["enum"]) == rules.SPEECH_FORMATS
    assert set(speech["properties"]["stream_format"]["enum"]) == rules.SPEECH_STREAM_FORMATS
    speed = speech["properties"]["speed"]
    assert (speed["minimum"], speed["maximum"]) == rules.SPEECH_SPEED_RANGE
    assert speech["properties"]["input"]["maxLength"] == rules.SPEECH_TEXT_MAX


def test_transcription_rules(schemas):
    transcription = schemas["CreateTranscriptionRequest"]
    assert transcription["additionalProperties"] is False
    assert set(transcription["properties"]) == rules.TRANSCRIPTION_PROPERTIES
    assert set(transcription["required"]) == rules.TRANSCRIPTION_REQUIRED
    assert enum_of(schemas["AudioResponseFormat"]) == rules.TRANSCRIPTION_FORMATS
    arrays = {name for name, prop in transcription["properties"].items() if prop.get("type") == "array"}
    assert arrays == rules.TRANSCRIPTION_ARRAYS
    file_help = transcription["properties"]["file"]["description"]
    assert all(kind in file_help for kind in rules.TRANSCRIPTION_FILE_TYPES)


def test_stream_events(schemas):
    delta, done = schemas["TranscriptTextDeltaEvent"], schemas["TranscriptTextDoneEvent"]
    assert delta["properties"]["type"]["enum"] == ["transcript.text.delta"] and "delta" in delta["required"]
    assert done["properties"]["type"]["enum"] == ["transcript.text.done"] and "text" in done["required"]
