"""What we offer — models, voices, languages — and the Wyoming ``info`` that says so.

The ``info`` answer is encoded once and again only when discovery changes the voices, so
``describe`` never waits and costs one socket write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice

from . import __version__
from .backends import known_backend
from .settings import OPENAI_VOICES, Settings, redact_url
from .wire import encode_event

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    """A voice we offer: an upstream voice, or a preset that names one with its own settings."""

    name: str  # what clients ask for
    model: str
    description: str  # Home Assistant's voice picker shows this
    upstream_voice: str | None = None  # the upstream's name for it, when it differs (a preset)
    instructions: str | None = None  # a preset's; otherwise --tts-instructions applies
    speed: float | None = None  # a preset's; otherwise --tts-speed applies
    languages: tuple[str, ...] = ()  # a preset's; otherwise every --languages

    @property
    def upstream(self) -> str:
        return self.upstream_voice or self.name

    def language(self, requested: str | None) -> str | None:
        """The language this voice speaks for a request: the request's, if the voice speaks it."""
        if self.languages and (not requested or not _speaks(self.languages, requested)):
            return self.languages[0]
        return requested


def _speaks(languages: tuple[str, ...], requested: str) -> bool:
    wanted = requested.lower().replace("_", "-")
    return any(wanted == code.lower().replace("_", "-") or wanted.startswith(code.lower() + "-") for code in languages)


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stt_attribution = Attribution(name="OpenAI-compatible API", url=redact_url(settings.stt_openai_url))
        self.tts_attribution = Attribution(name="OpenAI-compatible API", url=redact_url(settings.tts_openai_url))
        self.voices: dict[str, Voice] = {}
        self.default_voice: Voice | None = None
        self.info_bytes = b""
        self.on_unknown_voice: Callable[[str], object] | None = None  # discovery: a reason to ask again
        # Until discovery answers, offer OpenAI's voices (what an unknown server falls back to as well):
        # Home Assistant cannot load a TTS entity whose program has no voice, and it keeps the
        # info it got when the server was added.
        self.set_voices((voice, None) for voice in settings.tts_voices or OPENAI_VOICES)
        self.provisional = (
            not settings.tts_voices and known_backend(settings.tts_backend, settings.tts_openai_url) is None
        )

    # --- lookups -----------------------------------------------------------------------------

    def stt_model(self, requested: str | None) -> str:
        """The model a ``transcribe`` asks for when it names one we serve, else the default."""
        if requested and requested in self.settings.stt_models:
            return requested
        return self.settings.stt_models[0]

    def voice(self, requested: str | None) -> Voice | None:
        """The voice a ``synthesize`` asks for; an unknown one falls back to the default."""
        if requested and requested not in self.voices and self.on_unknown_voice is not None:
            self.on_unknown_voice(requested)
        if self.provisional and requested and self.settings.tts_models:
            # Discovery has not answered yet: trust the client's choice rather than refuse.
            return self.voices.get(requested) or Voice(requested, self.settings.tts_models[0], requested)
        if requested:
            found = self.voices.get(requested)
            if found is not None:
                return found
            _LOGGER.warning("Unknown voice %r; using %r", requested, self.default_voice and self.default_voice.name)
        return self.default_voice

    # --- updates -----------------------------------------------------------------------------

    def set_voices(self, voices: Iterable[tuple[str, str | None]], provisional: bool = False) -> None:
        """Offer these (voice, model) pairs; a voice without a model speaks with the first model.

        Each voice is listed once, with the first model that has it, so Home Assistant's voice
        picker shows no duplicates. The presets follow, each in the place of a voice of the same
        name (so naming one in --tts-voices puts it there, first: the default). ``provisional``: a
        stand-in list, so voices the client names are trusted as they are.
        """
        labels = self.settings.tts_voice_labels
        models = self.settings.tts_models
        offered: dict[str, Voice] = {}
        for name, model in voices:
            if not name or name in offered or not models:
                continue
            model = model if model in models else models[0]
            label = labels.get(name, name)
            offered[name] = Voice(name, model, label if len(models) == 1 else f"{label} ({model})")
        if models:
            for preset in self.settings.tts_voice_presets:
                offered[preset.name] = Voice(
                    preset.name,
                    preset.model or models[0],
                    preset.label or labels.get(preset.name, preset.name),
                    upstream_voice=preset.voice,
                    instructions=preset.instructions,
                    speed=preset.speed,
                    languages=preset.languages,
                )
        self.voices = offered
        self.provisional = provisional
        self.default_voice = next(iter(offered.values()), None)
        self.info_bytes = encode_event(self.info().event())

    def info(self) -> Info:
        asr = [self._asr_program()] if self.settings.stt_models else []
        tts = [self._tts_program()] if self.settings.tts_models else []
        return Info(asr=asr, tts=tts)

    def _asr_program(self) -> AsrProgram:
        settings = self.settings
        return AsrProgram(
            name="wyoming-openai",
            description="Speech-to-text through an OpenAI-compatible API",
            attribution=self.stt_attribution,
            installed=True,
            version=__version__,
            models=[
                AsrModel(
                    name=model,
                    description=model,
                    attribution=self.stt_attribution,
                    installed=True,
                    version=None,
                    languages=list(settings.languages),
                )
                for model in settings.stt_models
            ],
            supports_transcript_streaming=bool(settings.stt_streaming_models or settings.stt_realtime_models),
        )

    def _tts_program(self) -> TtsProgram:
        return TtsProgram(
            name="wyoming-openai",
            description="Text-to-speech through an OpenAI-compatible API",
            attribution=self.tts_attribution,
            installed=True,
            version=__version__,
            voices=self._voice_entries(),
            supports_synthesize_streaming=bool(self.settings.tts_streaming_models),
        )

    def _voice_entries(self) -> list[TtsVoice]:
        """One entry per voice, listed under each language it speaks (Home Assistant lists a voice
        under every language of its entry)."""
        return [
            TtsVoice(
                name=voice.name,
                description=voice.description,
                attribution=self.tts_attribution,
                installed=True,
                version=None,
                languages=list(voice.languages or self.settings.languages),
            )
            for voice in self.voices.values()
        ]
