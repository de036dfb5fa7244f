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
from .framing import encode_event
from .settings import OPENAI_VOICES, Settings, redact_url

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Voice:
    name: str
    model: str
    description: str


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stt_attribution = Attribution(name="OpenAI-compatible API", url=redact_url(settings.stt_openai_url))
        self.tts_attribution = Attribution(name="OpenAI-compatible API", url=redact_url(settings.tts_openai_url))
        self.voices: dict[str, Voice] = {}
        self.default_voice: Voice | None = None
        self.info_bytes = b""
        self.on_change: list[Callable[[bytes], object]] = []  # told the new info_bytes
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
        picker shows no duplicates. ``provisional``: a stand-in list, so voices the client names are
        trusted as they are.
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
        self.voices = offered
        self.provisional = provisional
        self.default_voice = next(iter(offered.values()), None)
        self.info_bytes = encode_event(self.info().event())
        for listener in self.on_change:
            listener(self.info_bytes)

    def info(self) -> Info:
        settings = self.settings
        languages = list(settings.languages)
        asr: list[AsrProgram] = []
        tts: list[TtsProgram] = []
        if settings.stt_models:
            asr.append(
                AsrProgram(
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
                            languages=languages,
                        )
                        for model in settings.stt_models
                    ],
                    supports_transcript_streaming=bool(settings.stt_streaming_models or settings.stt_realtime_models),
                )
            )
        if settings.tts_models:
            tts.append(
                TtsProgram(
                    name="wyoming-openai",
                    description="Text-to-speech through an OpenAI-compatible API",
                    attribution=self.tts_attribution,
                    installed=True,
                    version=__version__,
                    voices=[
                        TtsVoice(
                            name=voice.name,
                            description=voice.description,
                            attribution=self.tts_attribution,
                            installed=True,
                            version=None,
                            languages=languages,
                        )
                        for voice in self.voices.values()
                    ],
                    supports_synthesize_streaming=bool(settings.tts_streaming_models),
                )
            )
        return Info(asr=asr, tts=tts)
