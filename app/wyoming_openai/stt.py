"""One utterance: audio collected within a bound, sent as WAV, the reply turned into text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from .audio import PcmFormat, to_wav
from .realtime import RealtimeTranscriber
from .settings import Backend, Settings
from .upstream import Upstream, UpstreamError, server_sent_events, upstream_language

_LOGGER = logging.getLogger(__name__)


class UtteranceTooLong(Exception):
    """The client sent more audio than ``--stt-max-seconds`` allows."""


class Utterance:
    """The audio of one ``audio-start`` … ``audio-stop``, whatever its chunking."""

    def __init__(self, fmt: PcmFormat, max_seconds: float, keep: bool = True) -> None:
        self.format = fmt
        self.max_seconds = max_seconds
        self.keep = keep  # False when the audio goes on to a Realtime session as it comes
        self._max_bytes = int(max_seconds * fmt.bytes_per_second)
        self._chunks: list[bytes] = []  # joined once, into the WAV
        self._size = 0

    def has_room(self, size: int) -> bool:
        return self._size + size <= self._max_bytes

    def add(self, pcm: bytes) -> None:
        if not self.has_room(len(pcm)):
            raise UtteranceTooLong(f"utterance longer than the {self.max_seconds:g} s allowed (--stt-max-seconds)")
        self._size += len(pcm)
        if self.keep:
            self._chunks.append(pcm)

    @property
    def seconds(self) -> float:
        return self._size / self.format.bytes_per_second

    def wav(self) -> bytes:
        # A client may stop mid-frame; a WAV holds whole frames only.
        cut = self._size % self.format.frame_bytes
        if cut:
            self._chunks = [b"".join(self._chunks)[:-cut]]
            self._size -= cut
        return to_wav(self._chunks, self.format)


class Transcriber:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.backend: Backend | None = settings.stt_backend
        self.realtime: RealtimeTranscriber | None = None
        if settings.stt_realtime_models:
            self.realtime = RealtimeTranscriber(settings, upstream)

    def is_realtime(self, model: str) -> bool:
        return self.realtime is not None and model in self.settings.stt_realtime_models

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
        _LOGGER.debug("Transcribing %.2f s with %s (language %s)", utterance.seconds, model, fields.get("language"))
        reply = await self.upstream.post_form("/audio/transcriptions", fields, _wav_file(utterance))
        return self._text_of(reply)

    async def transcribe_stream(
        self, utterance: Utterance, model: str, language: str | None
    ) -> AsyncIterator[tuple[bool, str]]:
        """(done, text) pairs: deltas as the upstream forms them, then (True, the whole text)."""
        fields = {**self.request_fields(model, upstream_language(language)), "stream": True}
        _LOGGER.debug("Transcribing %.2f s with %s, streamed", utterance.seconds, model)
        async with self.upstream.stream_post_form("/audio/transcriptions", fields, _wav_file(utterance)) as (
            kind,
            body,
        ):
            if kind != "text/event-stream":  # a server that ignores stream=true answers at once
                raw = b"".join([chunk async for chunk in body])
                yield True, self._text_of(self.upstream.parse_reply(kind, raw))
                return
            deltas: list[str] = []
            async for event in server_sent_events(body):
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "transcript.text.delta" and isinstance(event.get("delta"), str):
                    deltas.append(event["delta"])
                    yield False, event["delta"]
                elif kind == "transcript.text.done" and isinstance(event.get("text"), str):
                    yield True, event["text"].strip()
                    return
        # A stream that ended without its done event still said something.
        yield True, "".join(deltas).strip()

    def _text_of(self, reply: Any) -> str:
        if isinstance(reply, str):
            return reply.strip()
        if isinstance(reply, dict) and isinstance(reply.get("text"), str):
            return reply["text"].strip()
        raise UpstreamError(f"STT upstream {self.upstream.display_url} sent a reply without text")


def _wav_file(utterance: Utterance) -> tuple[str, bytes, str]:
    return "audio.wav", utterance.wav(), "audio/wav"
