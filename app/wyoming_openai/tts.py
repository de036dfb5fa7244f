"""One synthesis: text made speakable, to the upstream, its audio back as 16-bit mono PCM while it arrives."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from .audio import AudioDecodeError, PcmFormat, decode_speech
from .catalog import Voice
from .realtime import RealtimeSynthesizer
from .settings import TTS_FORMATS, Settings
from .speech_text import SpeechText
from .upstream import Upstream, UpstreamError

_LOGGER = logging.getLogger(__name__)

# OpenAI's older models reject instructions.
_NO_INSTRUCTIONS = ("tts-1", "tts-1-hd")
# What a text with nothing to say (only emoji or marks) gets: clients expect audio for a synthesize.
SILENCE_SECONDS = 0.1
# The formats to try when the upstream refuses one: cheapest to decode first.
FORMAT_PREFERENCE = ("wav", "pcm", "flac", "mp3", "opus", "aac")


class Synthesizer:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.realtime = RealtimeSynthesizer(settings, upstream) if settings.tts_realtime_models else None
        # (upstream, model) -> the response_format it accepted after refusing the configured one.
        self.accepted_formats: dict[tuple[str, str], str] = {}
        self.speech_text = SpeechText(
            settings.tts_clean_text, settings.tts_clean_urls, settings.tts_pronunciations + settings.tts_pronounce
        )

    def speakable(self, text: str, voice: Voice, language: str | None = None) -> str:
        """``text`` as the upstream should get it: cleaned and pronounced; "" when nothing is left to say."""
        return self.speech_text(text, voice.language(language) or self.settings.languages[0])

    def response_format(self, model: str) -> str:
        return self.accepted_formats.get((self.upstream.base_url, model), self.settings.tts_response_format)

    def request_body(self, text: str, voice: Voice, response_format: str | None = None) -> dict[str, Any]:
        settings = self.settings
        body: dict[str, Any] = {
            "model": voice.model,
            "input": text,
            "voice": voice.upstream,
            "response_format": response_format or self.response_format(voice.model),
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
        asked = self.response_format(voice.model)
        _LOGGER.debug("Synthesizing %d characters with %s/%s", len(text), voice.model, voice.upstream)
        try:
            async with aclosing(self._speak(text, voice, asked)) as pieces:
                async for piece in pieces:
                    yield piece
        except _FormatRefused as refused:
            retry = self._format_after(refused.error, asked, voice.model)
            if retry is None:
                raise refused.error from None
            try:
                async with aclosing(self._speak(text, voice, retry)) as pieces:
                    async for piece in pieces:
                        yield piece
            except _FormatRefused as again:  # once only: the second refusal is the answer
                raise again.error from None
            self.accepted_formats[(self.upstream.base_url, voice.model)] = retry

    async def _speak(self, text: str, voice: Voice, asked: str) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        try:
            async with self.upstream.stream_post_json("/audio/speech", self.request_body(text, voice, asked)) as (
                content_type,
                chunks,
            ):
                async for piece in self._decode(chunks, asked, content_type):
                    yield piece
        except UpstreamError as err:
            # A status comes before any audio: refusing the format is the only refusal worth a retry.
            if err.status in (400, 415, 422) and "response_format" in str(err):
                raise _FormatRefused(err) from None
            raise

    async def _decode(
        self, chunks: AsyncIterator[bytes], asked: str, content_type: str
    ) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        pace = _Pace(self.settings.upstream_read_timeout, self.upstream)
        try:
            async for fmt, pcm in decode_speech(
                pace.watch(chunks),
                asked,
                pcm_rate=self.settings.tts_pcm_sample_rate,
                target_rate=self.settings.tts_sample_rate,
                content_type=content_type,
            ):
                pace.received(fmt, pcm)
                yield fmt, pcm
        except AudioDecodeError as err:
            raise AudioDecodeError(f"TTS upstream {self.upstream.display_url} {err}") from None

    def _format_after(self, error: UpstreamError, refused: str, model: str) -> str | None:
        """The format to ask for instead of one the upstream refused: the first of our preference
        that its error names, if it names any, else the next one we have not tried."""
        named = [f for f in FORMAT_PREFERENCE if f != refused and _names(str(error), f)]
        untried = [f for f in FORMAT_PREFERENCE if f != refused]
        choice = (named or untried or [None])[0]
        if choice is not None:
            _LOGGER.warning(
                "TTS upstream %s refused response_format %s for %s (%s); asking for %s instead (remembered)",
                self.upstream.display_url,
                refused,
                model,
                error,
                choice,
            )
        return choice


def _names(text: str, fmt: str) -> bool:
    """Whether an error about response_format names a format ("must be one of [wav]", "'mp3', 'opus'")."""
    text = text.lower()
    return re.search(rf"\b{fmt}\b", text[text.find("response_format") :]) is not None


class _FormatRefused(Exception):
    def __init__(self, error: UpstreamError) -> None:
        self.error = error


assert set(FORMAT_PREFERENCE) == set(TTS_FORMATS)


class _Pace:
    """Gives up on a body that arrives much slower than it plays: once the audio received falls
    ``--upstream-read-timeout`` seconds behind real time (counted from the first audio). A drip of a
    few bytes a second never trips the per-read time-out, and would hold the client for minutes."""

    def __init__(self, allowance: float, upstream: Upstream) -> None:
        self.allowance = allowance
        self.upstream = upstream
        self.first: float | None = None
        self.seconds = 0.0
        self._loop = asyncio.get_running_loop()

    def received(self, fmt: PcmFormat, pcm: bytes) -> None:
        if self.first is None:
            self.first = self._loop.time()
        self.seconds += len(pcm) / fmt.bytes_per_second

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self.first is not None and self._loop.time() - self.first - self.seconds > self.allowance:
                raise UpstreamError(
                    self.upstream.scrub(
                        f"TTS upstream {self.upstream.display_url} sends its audio slower than it plays: "
                        f"{self.seconds:.1f} s of audio in {self._loop.time() - self.first:.1f} s; giving up"
                    )
                )
            yield chunk
