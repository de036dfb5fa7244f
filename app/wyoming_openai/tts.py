"""One synthesis: text made speakable, to the upstream, its audio back as 16-bit mono PCM while it arrives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from .audio import AudioDecodeError, PcmFormat, decode_speech
from .catalog import Voice
from .realtime import RealtimeSynthesizer
from .settings import Settings
from .speech_text import SpeechText
from .upstream import Upstream

_LOGGER = logging.getLogger(__name__)

# OpenAI's older models reject instructions.
_NO_INSTRUCTIONS = ("tts-1", "tts-1-hd")
# What a text with nothing to say (only emoji or marks) gets: clients expect audio for a synthesize.
SILENCE_SECONDS = 0.1


class Synthesizer:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.realtime = RealtimeSynthesizer(settings, upstream) if settings.tts_realtime_models else None
        self.speech_text = SpeechText(
            settings.tts_clean_text, settings.tts_clean_urls, settings.tts_pronunciations + settings.tts_pronounce
        )

    def speakable(self, text: str, voice: Voice, language: str | None = None) -> str:
        """``text`` as the upstream should get it: cleaned and pronounced; "" when nothing is left to say."""
        return self.speech_text(text, voice.language(language) or self.settings.languages[0])

    def request_body(self, text: str, voice: Voice) -> dict[str, Any]:
        settings = self.settings
        body: dict[str, Any] = {
            "model": voice.model,
            "input": text,
            "voice": voice.upstream,
            "response_format": settings.tts_response_format,
        }
        speed = voice.speed if voice.speed is not None else settings.tts_speed
        if speed is not None:
            body["speed"] = speed
        instructions = voice.instructions or settings.tts_instructions
        if instructions and voice.model not in _NO_INSTRUCTIONS:
            body["instructions"] = instructions
        body.update(settings.tts_extra_body)
        return body

    async def synthesize(
        self, text: str, voice: Voice, language: str | None = None
    ) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM) pieces of ``text`` as written; the format is the same for every piece."""
        async with aclosing(self.speak(self.speakable(text, voice, language), voice)) as pieces:
            async for piece in pieces:
                yield piece

    async def speak(self, text: str, voice: Voice) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM) pieces of speakable text; for "" (nothing to say), a moment of silence."""
        if not text.strip():
            fmt = PcmFormat(self.settings.tts_sample_rate or self.settings.tts_pcm_sample_rate)
            _LOGGER.debug("Nothing to say once cleaned: %.1f s of silence", SILENCE_SECONDS)
            yield fmt, bytes(int(fmt.rate * SILENCE_SECONDS) * fmt.frame_bytes)
            return
        if self.realtime is not None and voice.model in self.settings.tts_realtime_models:
            async with aclosing(self.realtime.synthesize(text, voice)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        body = self.request_body(text, voice)
        _LOGGER.debug("Synthesizing %d characters with %s/%s", len(text), voice.model, voice.upstream)
        async with self.upstream.stream_post_json("/audio/speech", body) as chunks:
            try:
                async for piece in decode_speech(
                    chunks,
                    self.settings.tts_response_format,
                    pcm_rate=self.settings.tts_pcm_sample_rate,
                    target_rate=self.settings.tts_sample_rate,
                ):
                    yield piece
            except AudioDecodeError as err:
                raise AudioDecodeError(f"TTS upstream {self.upstream.display_url} {err}") from None
