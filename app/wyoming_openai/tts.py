"""One synthesis: text to the upstream, its audio back as 16-bit mono PCM while it arrives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from .audio import AudioDecodeError, PcmFormat, decode_speech
from .catalog import Voice
from .realtime import RealtimeSynthesizer
from .settings import Settings
from .upstream import Upstream

_LOGGER = logging.getLogger(__name__)

# OpenAI's older models reject instructions.
_NO_INSTRUCTIONS = ("tts-1", "tts-1-hd")


class Synthesizer:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.realtime = RealtimeSynthesizer(settings, upstream) if settings.tts_realtime_models else None

    def request_body(self, text: str, voice: Voice) -> dict[str, Any]:
        settings = self.settings
        body: dict[str, Any] = {
            "model": voice.model,
            "input": text,
            "voice": voice.name,
            "response_format": settings.tts_response_format,
        }
        if settings.tts_speed is not None:
            body["speed"] = settings.tts_speed
        if settings.tts_instructions and voice.model not in _NO_INSTRUCTIONS:
            body["instructions"] = settings.tts_instructions
        body.update(settings.tts_extra_body)
        return body

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM) pieces; the format is the same for every piece of one synthesis."""
        if self.realtime is not None and voice.model in self.settings.tts_realtime_models:
            async with aclosing(self.realtime.synthesize(text, voice)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        body = self.request_body(text, voice)
        _LOGGER.debug("Synthesizing %d characters with %s/%s", len(text), voice.model, voice.name)
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
