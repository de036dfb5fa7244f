"""Which Wyoming model and voice a request means, and the JSON objects that list them."""

from __future__ import annotations

from typing import Any

from .catalog import AsrModel, TtsModel, Voice
from .errors import ApiError, invalid, not_found
from .wyoming_pool import WyomingPool

# OpenAI's own model and voice names, which SDKs and apps send by default: they mean "the first
# Wyoming model of that kind" and "the model's default voice" unless a server offers those names.
OPENAI_TTS_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"})
OPENAI_STT_MODELS = frozenset(
    {"whisper-1", "gpt-transcribe", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15"}
)
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


async def resolve_model(pool: WyomingPool, model_id: str, kind: str) -> TtsModel | AsrModel:
    """The model for a request; one refresh if it is unknown, 503 if it may be on a server that is down."""
    for attempt in (0, 1):
        table = pool.catalog.tts if kind == "tts" else pool.catalog.asr
        model = table.get(model_id)
        if model is None and model_id in (OPENAI_TTS_MODELS if kind == "tts" else OPENAI_STT_MODELS) and table:
            model = next(iter(table.values()))
        if model is not None:
            return model
        if attempt == 0:
            await pool.refresh_if_stale()
    other = pool.catalog.asr if kind == "tts" else pool.catalog.tts
    if model_id in other:
        what = "speech-to-text" if kind == "tts" else "text-to-speech"
        raise invalid(f"The model '{model_id}' is a {what} model and cannot do this.", "model", "invalid_model")
    down = pool.unreachable()
    if down:
        raise ApiError(
            503,
            f"The model '{model_id}' is not available now: Wyoming server(s) {', '.join(down)} cannot be reached.",
            type="server_error",
            code="wyoming_unavailable",
        )
    table = pool.catalog.tts if kind == "tts" else pool.catalog.asr
    known = ", ".join(sorted(table)) or "none"
    raise not_found(
        f"The model '{model_id}' does not exist. Available {'text-to-speech' if kind == 'tts' else 'speech-to-text'} "
        f"models: {known}.",
        "model",
    )


def resolve_voice(model: TtsModel, value: Any) -> tuple[Voice | None, str | None]:
    """(voice, speaker). ``name:speaker`` picks a speaker of a multi-speaker voice."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value.strip():
        raise invalid("Invalid value for 'voice': expected a voice name.", "voice", "invalid_type")
    if value in model.voices:
        return model.voices[value], None
    name, sep, speaker = value.rpartition(":")
    if sep and name in model.voices:
        voice = model.voices[name]
        if voice.speakers and speaker not in voice.speakers:
            raise invalid(f"The voice '{name}' has no speaker '{speaker}'.", "voice", "voice_not_found")
        return voice, speaker
    if value in OPENAI_VOICES or not model.voices:
        return model.default_voice(), None
    examples = ", ".join(list(model.voices)[:10]) + (", …" if len(model.voices) > 10 else "")
    raise invalid(
        f"The voice '{value}' is not offered by model '{model.id}'. Voices include: {examples} "
        f"(GET /v1/audio/voices?model={model.id} lists them all).",
        "voice",
        "voice_not_found",
    )


def model_object(model: TtsModel | AsrModel) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "task": "text-to-speech" if isinstance(model, TtsModel) else "speech-to-text",
    }
    if model.description:
        data["description"] = model.description
    if isinstance(model, AsrModel):
        data["languages"] = list(model.languages)
        data["streaming"] = model.streaming
    else:
        data["languages"] = sorted({lang for v in model.voices.values() for lang in v.languages})
    return data


def voice_object(model: TtsModel, voice: Voice) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": voice.id,
        "object": "voice",
        "name": voice.description or voice.name,
        "model": model.id,
        "languages": list(voice.languages),
        "installed": voice.installed,
        "default": voice is model.default_voice(),
    }
    if voice.speakers:
        entry["speakers"] = list(voice.speakers)
    return entry
