"""One utterance: audio collected within a bound, sent as WAV, the reply turned into text.

Silence is not sent: an utterance that never rises above a level near digital silence gets an empty
transcript at once (no cost, and nothing for Whisper to hallucinate on). Whisper's known
hallucinations for short or quiet audio ("Thank you for watching.", "Subtitles by …") are dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from .audio import SAMPLE_WIDTH, PcmFormat, peak_below, sample_limit, to_wav
from .realtime import RealtimeTranscriber
from .settings import Backend, Settings
from .upstream import Upstream, UpstreamError, clip, server_sent_events, upstream_language

_LOGGER = logging.getLogger(__name__)

# Whisper's hallucinations come from silence, noise or a cough: short or quiet utterances.
HALLUCINATION_MAX_SECONDS = 10.0
HALLUCINATION_QUIET_DBFS = -36.0


class UtteranceTooLong(Exception):
    """The client sent more audio than ``--stt-max-seconds`` allows."""


class Utterance:
    """The audio of one ``audio-start`` … ``audio-stop``, whatever its chunking."""

    def __init__(self, fmt: PcmFormat, max_seconds: float, keep: bool = True) -> None:
        self.format = fmt
        self.max_seconds = max_seconds
        self.keep = keep  # False when the audio goes on to a Realtime session as it comes
        self._max_bytes = int(max_seconds * fmt.bytes_per_second)
        self._chunks: list[bytes] = []  # joined once, when the utterance is complete
        self._size = 0
        self._odd_chunks = False  # a chunk of an odd size: the later ones do not start on a sample

    def has_room(self, size: int) -> bool:
        return self._size + size <= self._max_bytes

    def add(self, pcm: bytes) -> None:
        if not self.has_room(len(pcm)):
            raise UtteranceTooLong(f"utterance longer than the {self.max_seconds:g} s allowed (--stt-max-seconds)")
        self._size += len(pcm)
        if self.keep:
            self._chunks.append(pcm)
            self._odd_chunks = self._odd_chunks or len(pcm) % 2 == 1

    @property
    def seconds(self) -> float:
        return self._size / self.format.bytes_per_second

    def pcm(self) -> bytes:
        """All the audio, in whole frames (a client may stop mid-frame)."""
        self._whole_frames()
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def wav(self) -> bytes:
        self._whole_frames()
        return to_wav(self._chunks, self.format)  # the chunks are joined once, into the WAV

    def _whole_frames(self) -> None:
        cut = self._size % self.format.frame_bytes
        if cut:
            self._chunks = [b"".join(self._chunks)[:-cut]]
            self._size -= cut

    def peak_below(self, dbfs: float) -> bool:
        if not self.keep or self.format.width != SAMPLE_WIDTH:
            return False
        limit = sample_limit(dbfs)
        if self._chunks and not self._odd_chunks:
            # Speech is loud somewhere in its middle: a few of its chunks settle most utterances at
            # once, without a pass over all the audio (which silence needs, to be sure).
            for i in range(1, 8):
                if not peak_below(self._chunks[len(self._chunks) * i // 8], SAMPLE_WIDTH, limit):
                    return False
        return peak_below(self.pcm(), SAMPLE_WIDTH, limit)


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
        if self.is_silent(utterance):
            return ""
        fields = self.request_fields(model, upstream_language(language))
        _LOGGER.debug("Transcribing %.2f s with %s (language %s)", utterance.seconds, model, fields.get("language"))
        content_type, body = await self.upstream.post_form("/audio/transcriptions", fields, _wav_file(utterance))
        return self.checked(transcript_of(content_type, body, self._where()), utterance)

    async def transcribe_stream(
        self, utterance: Utterance, model: str, language: str | None
    ) -> AsyncIterator[tuple[bool, str]]:
        """(done, text) pairs: deltas as the upstream forms them, then (True, the whole text)."""
        if self.is_silent(utterance):
            yield True, ""
            return
        fields = {**self.request_fields(model, upstream_language(language)), "stream": True}
        _LOGGER.debug("Transcribing %.2f s with %s, streamed", utterance.seconds, model)
        async with self.upstream.stream_post_form("/audio/transcriptions", fields, _wav_file(utterance)) as (
            kind,
            body,
        ):
            if not kind.startswith("text/event-stream"):  # a server that ignores stream=true answers at once
                raw = b"".join([chunk async for chunk in body])
                yield True, self.checked(transcript_of(kind, raw, self._where()), utterance)
                return
            deltas: list[str] = []
            async for event in server_sent_events(body):
                done, text = _event_text(event, self._where())
                if done:
                    yield True, self.checked(text.strip(), utterance)
                    return
                if text:
                    deltas.append(text)
                    yield False, text
        # A stream that ended without its done event still said something.
        yield True, self.checked("".join(deltas).strip(), utterance)

    # --- silence and hallucinations -----------------------------------------------------------

    def is_silent(self, utterance: Utterance) -> bool:
        settings = self.settings
        if not settings.stt_silence_gate or not utterance.peak_below(settings.stt_silence_threshold):
            return False
        _LOGGER.info(
            "%.1f s of audio never rose above %g dBFS: empty transcript, nothing sent upstream",
            utterance.seconds,
            settings.stt_silence_threshold,
        )
        return True

    def checked(self, text: str, utterance: Utterance) -> str:
        """The transcript, or nothing when it is one of Whisper's hallucinations for short or quiet audio."""
        if not self.settings.stt_hallucination_filter or not is_hallucination(text):
            return text
        if utterance.seconds > HALLUCINATION_MAX_SECONDS and not utterance.peak_below(HALLUCINATION_QUIET_DBFS):
            return text
        _LOGGER.info(
            "Dropped %r, a known Whisper hallucination, transcribed from %.1f s of audio", text, utterance.seconds
        )
        return ""

    def _where(self) -> str:
        return f"STT upstream {self.upstream.display_url}"


def _wav_file(utterance: Utterance) -> tuple[str, bytes, str]:
    return "audio.wav", utterance.wav(), "audio/wav"


# --- the shapes of a transcription reply -------------------------------------------------------------


def transcript_of(content_type: str, body: bytes, where: str) -> str:
    """The text of a whole transcription reply: JSON ``{"text"}`` (plain or verbose), server-sent
    events, or plain text (any body that is not JSON)."""
    if content_type.startswith("text/event-stream"):
        return _events_text(body, where)
    text = body.decode("utf-8", "replace").strip()
    if not text.startswith(("{", "[", '"')):
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return text  # plain text that happens to start like JSON
    return _json_text(parsed, where)


def _json_text(reply: Any, where: str) -> str:
    if isinstance(reply, str):
        return reply.strip()
    if isinstance(reply, dict):
        if isinstance(reply.get("text"), str):
            return reply["text"].strip()
        if "text" in reply and reply["text"] is None:
            return ""
        if isinstance(reply.get("segments"), list):
            return "".join(s.get("text", "") for s in reply["segments"] if isinstance(s, dict)).strip()
        if "error" in reply:
            raise UpstreamError(f"{where} reported an error: {_error_message(reply['error'])}")
    raise UpstreamError(f"{where} sent a reply without text")


def _event_text(event: Any, where: str) -> tuple[bool, str]:
    """(done, text) of one server-sent event: OpenAI's delta and done events, a segment's JSON
    (Speaches streams one ``{"text"}`` per segment), or plain text."""
    if isinstance(event, str):
        return False, event
    if not isinstance(event, dict):
        return False, ""
    kind = event.get("type")
    if kind == "transcript.text.delta":
        return False, event.get("delta") if isinstance(event.get("delta"), str) else ""
    if kind == "transcript.text.done":
        return True, event.get("text") if isinstance(event.get("text"), str) else ""
    if kind == "error" or "error" in event:
        raise UpstreamError(f"{where} reported an error: {_error_message(event.get('error') or event)}")
    if kind is None and isinstance(event.get("text"), str):
        return False, event["text"]
    return False, ""


def _events_text(body: bytes, where: str) -> str:
    deltas = []
    for line in body.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        data = line[5:].strip()
        try:
            event = json.loads(data)
        except ValueError:
            event = data.decode("utf-8", "replace")
        done, text = _event_text(event, where)
        if done:
            return text.strip()
        deltas.append(text)
    return "".join(deltas).strip()


def _error_message(value: Any) -> str:
    return clip(value["message"] if isinstance(value, dict) and value.get("message") else value)


# --- Whisper's hallucinations ----------------------------------------------------------------------

# What Whisper writes for silence or noise, learnt from the subtitles it was trained on; said to a
# voice assistant, none of these is a command. Matched against the whole transcript, lower-cased,
# punctuation removed.
_HALLUCINATIONS = re.compile(
    "|".join(
        (
            r"(thank you|thanks)( (so|very) much)? for (watching|listening)( and see you next time)?",
            r"(please )?(like and )?subscribe( to (my|the|our) channel)?",
            r"you",
            r"(subtitles|captions|transcription|subtitling)( were| are)? (made |created |provided |done )?by .*",
            r".*\bamara org\b.*",
            r"untertitel(ung)? (der|des|von|im auftrag|aufgrund) .*",
            r"(vielen )?dank fürs zuschauen",
            r"sous titr(es|age) .*",
            r"merci d avoir regardé( cette vidéo)?",
            r"subtítulos (realizados |hechos )?por .*",
            r"gracias por ver( el vídeo| el video)?",
            r"sottotitoli (creati|a cura) .*",
            r"grazie per la visione",
            r"(obrigado|obrigada) por assistir",
            r"legendas (pela|por) .*",
            r"ondertiteling (door|van) .*",
            r"bedankt voor het kijken",
            r"продолжение следует",
            r"(редактор )?субтитр.*",
            r"спасибо за просмотр",
            r"napisy (stworzone|wykonane|zrobione) .*",
            r"dziękuję za (uwagę|obejrzenie)",
            r"ご視聴ありがとうございました",
            r"(谢谢|感谢)(观看|收看)",
            r"字幕.*",
            r"시청해 ?주셔서 감사합니다",
        )
    )
)
_PUNCTUATION = re.compile(r"[^\w\s]+")


def is_hallucination(text: str) -> bool:
    normalized = " ".join(_PUNCTUATION.sub(" ", text.casefold()).split())
    return bool(normalized) and _HALLUCINATIONS.fullmatch(normalized) is not None
