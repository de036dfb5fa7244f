"""One utterance: audio collected within a bound, sent as WAV, the reply turned into text."""

from __future__ import annotations

import logging
from typing import Any

from .audio import PcmFormat, to_wav
from .settings import Backend, Settings
from .upstream import Upstream, UpstreamError

_LOGGER = logging.getLogger(__name__)


class UtteranceTooLong(Exception):
    """The client sent more audio than ``--stt-max-seconds`` allows."""


class Utterance:
    """The audio of one ``audio-start`` … ``audio-stop``, whatever its chunking."""

    def __init__(self, fmt: PcmFormat, max_seconds: float) -> None:
        self.format = fmt
        self.max_seconds = max_seconds
        self._max_bytes = int(max_seconds * fmt.bytes_per_second)
        self._pcm = bytearray()

    def add(self, pcm: bytes) -> None:
        if len(self._pcm) + len(pcm) > self._max_bytes:
            raise UtteranceTooLong(f"utterance longer than the {self.max_seconds:g} s allowed (--stt-max-seconds)")
        self._pcm += pcm

    @property
    def seconds(self) -> float:
        return len(self._pcm) / self.format.bytes_per_second

    def wav(self) -> bytes:
        # A client may stop mid-frame; a WAV holds whole frames only.
        usable = len(self._pcm) - len(self._pcm) % self.format.frame_bytes
        return to_wav(bytes(self._pcm[:usable]), self.format)


def upstream_language(language: str | None) -> str | None:
    """ISO-639-1 as the API wants it: Home Assistant may send ``en-US`` or ``pt_BR``."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


class Transcriber:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.backend: Backend | None = settings.stt_backend

    def request_fields(self, model: str, language: str | None) -> dict[str, Any]:
        settings = self.settings
        fields: dict[str, Any] = {"model": model, "response_format": "json"}
        if language:
            fields["language"] = language
        if settings.stt_prompt:
            fields["prompt"] = settings.stt_prompt
        if settings.stt_temperature is not None:
            fields["temperature"] = settings.stt_temperature
        if self.backend is Backend.SPEACHES:
            # Speaches' voice-activity filter cuts short commands; Home Assistant has done VAD already.
            fields["vad_filter"] = False
        fields.update(settings.stt_extra_body)
        return fields

    async def transcribe(self, utterance: Utterance, model: str, language: str | None) -> str:
        fields = self.request_fields(model, upstream_language(language))
        wav = utterance.wav()
        _LOGGER.debug("Transcribing %.2f s with %s (language %s)", utterance.seconds, model, fields.get("language"))
        reply = await self.upstream.post_form("/audio/transcriptions", fields, ("audio.wav", wav, "audio/wav"))
        if isinstance(reply, str):
            return reply.strip()
        if isinstance(reply, dict) and isinstance(reply.get("text"), str):
            return reply["text"].strip()
        raise UpstreamError(f"STT upstream {self.upstream.display_url} sent a reply without text")
