"""The Wyoming conversation with one client: events in, calls on STT/TTS, events out.

Failures end with an ``error`` event and a closed connection: Home Assistant ignores ``error``
and only notices that something went wrong when the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .audio import AudioDecodeError, PcmFormat
from .catalog import Catalog
from .framing import encode_event
from .settings import Settings
from .stt import Transcriber, Utterance, UtteranceTooLong
from .tts import Synthesizer
from .upstream import UpstreamError

_LOGGER = logging.getLogger(__name__)

MAX_STREAMED_TEXT = 64 * 1024  # characters of one streamed synthesis


class ClientError(Exception):
    """The client sent something we cannot act on; the text says what."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    transcriber: Transcriber | None
    synthesizer: Synthesizer | None


class Handler:
    def __init__(self, services: Services, writer: asyncio.StreamWriter, peer: str) -> None:
        self.services = services
        self.writer = writer
        self.peer = peer
        self._reset()

    def _reset(self) -> None:
        self.stt_model: str | None = None
        self.stt_language: str | None = None
        self.utterance: Utterance | None = None
        self.transcribing = False
        self.stream_voice: str | None = None
        self.stream_text: list[str] | None = None
        self.stream_length = 0

    # --- dispatch ----------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        """Act on one event; False closes the connection."""
        try:
            return await self._dispatch(event)
        except (UpstreamError, AudioDecodeError) as err:
            return await self._fail(str(err), type(err).__name__)
        except UtteranceTooLong as err:
            return await self._fail(str(err), "UtteranceTooLong")
        except ClientError as err:
            return await self._fail(str(err), "ClientError")
        except (KeyError, TypeError, ValueError) as err:
            return await self._fail(f"malformed {event.type} event ({type(err).__name__})", "ClientError")

    async def _dispatch(self, event: Event) -> bool:
        kind = event.type
        if kind == "describe":
            self.writer.write(self.services.catalog.info_bytes)
            await self.writer.drain()
        elif AudioChunk.is_type(kind):
            self._on_audio_chunk(AudioChunk.from_event(event))
        elif Transcribe.is_type(kind):
            transcribe = Transcribe.from_event(event)
            self._require(self.services.transcriber, "speech-to-text")
            self.stt_model = self.services.catalog.stt_model(_optional_text(transcribe.name))
            self.stt_language = _optional_text(transcribe.language)
            self.transcribing = True
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            self.utterance = self._new_utterance(PcmFormat(start.rate, start.width, start.channels))
        elif AudioStop.is_type(kind):
            await self._on_audio_stop()
        elif Synthesize.is_type(kind):
            if self.stream_text is None:  # inside a streaming session the full text is a duplicate
                synthesize = Synthesize.from_event(event)
                await self._speak(_text(synthesize.text), _voice_name(synthesize.voice))
        elif SynthesizeStart.is_type(kind):
            start_event = SynthesizeStart.from_event(event)
            self._require(self.services.synthesizer, "text-to-speech")
            self.stream_voice = _voice_name(start_event.voice)
            self.stream_text = []
            self.stream_length = 0
        elif SynthesizeChunk.is_type(kind):
            self._on_synthesize_chunk(_text(SynthesizeChunk.from_event(event).text))
        elif SynthesizeStop.is_type(kind):
            await self._on_synthesize_stop()
        elif Ping.is_type(kind):
            await self._write(Pong(text=Ping.from_event(event).text).event())
        else:
            _LOGGER.debug("Ignoring %s event from %s", kind, self.peer)
        return True

    # --- speech to text ----------------------------------------------------------------------

    def _new_utterance(self, fmt: PcmFormat) -> Utterance:
        self._require(self.services.transcriber, "speech-to-text")
        if fmt.rate < 1000 or fmt.rate > 384_000 or fmt.width not in (1, 2, 3, 4) or not 1 <= fmt.channels <= 8:
            raise ClientError(f"unsupported audio format: {fmt.rate} Hz, {fmt.width} bytes, {fmt.channels} channels")
        return Utterance(fmt, self.services.settings.stt_max_seconds)

    def _on_audio_chunk(self, chunk: AudioChunk) -> None:
        if self.utterance is None:
            if not self.transcribing:
                raise ClientError("audio-chunk without transcribe or audio-start")
            # Lenient: some clients skip audio-start; the chunk says its own format.
            self.utterance = self._new_utterance(PcmFormat(chunk.rate, chunk.width, chunk.channels))
        self.utterance.add(chunk.audio)

    async def _on_audio_stop(self) -> None:
        transcriber = self.services.transcriber
        utterance = self.utterance
        if utterance is None or transcriber is None:
            raise ClientError("audio-stop without audio-start")
        model = self.stt_model or self.services.catalog.stt_model(None)
        language = self.stt_language or self.services.settings.languages[0]
        self._reset()
        if model in self.services.settings.stt_streaming_models:
            text = await self._transcribe_streamed(transcriber, utterance, model, language)
        else:
            text = await transcriber.transcribe(utterance, model, language)
        _LOGGER.info("Transcribed %.1f s for %s: %d characters", utterance.seconds, self.peer, len(text))
        await self._write(Transcript(text=text).event())

    async def _transcribe_streamed(self, transcriber: Transcriber, utterance: Utterance, model: str, language: str) -> str:
        await self._write(TranscriptStart(language=language).event())
        async for done, text in transcriber.transcribe_stream(utterance, model, language):
            if done:
                await self._write(TranscriptStop().event())
                return text
            await self._write(TranscriptChunk(text=text).event())
        raise UpstreamError("STT upstream ended its stream without a transcript")  # pragma: no cover

    # --- text to speech ----------------------------------------------------------------------

    def _on_synthesize_chunk(self, text: str) -> None:
        if self.stream_text is None:
            raise ClientError("synthesize-chunk without synthesize-start")
        self.stream_length += len(text)
        if self.stream_length > MAX_STREAMED_TEXT:
            raise ClientError(f"streamed text longer than {MAX_STREAMED_TEXT} characters")
        self.stream_text.append(text)

    async def _on_synthesize_stop(self) -> None:
        if self.stream_text is None:
            raise ClientError("synthesize-stop without synthesize-start")
        text, voice = "".join(self.stream_text), self.stream_voice
        self._reset()
        if text.strip():
            await self._speak(text, voice)
        await self._write(SynthesizeStopped().event())

    async def _speak(self, text: str, voice_name: str | None) -> None:
        synthesizer = self._require(self.services.synthesizer, "text-to-speech")
        voice = self.services.catalog.voice(voice_name)
        if voice is None:
            raise ClientError("no voice is configured")
        if not text.strip():
            raise ClientError("nothing to say: the text is empty")
        fmt: PcmFormat | None = None
        samples = 0
        async for piece_format, pcm in synthesizer.synthesize(text, voice):
            if fmt is None:
                fmt = piece_format
                await self._write(AudioStart(rate=fmt.rate, width=fmt.width, channels=fmt.channels).event())
            await self._write(
                AudioChunk(
                    rate=fmt.rate,
                    width=fmt.width,
                    channels=fmt.channels,
                    audio=pcm,
                    timestamp=samples * 1000 // fmt.rate,
                ).event()
            )
            samples += len(pcm) // fmt.frame_bytes
        if fmt is None:
            raise AudioDecodeError("TTS upstream sent no audio")
        await self._write(AudioStop(timestamp=samples * 1000 // fmt.rate).event())
        _LOGGER.info("Spoke %d characters to %s: %.1f s of audio", len(text), self.peer, samples / fmt.rate)

    # --- plumbing ----------------------------------------------------------------------------

    def _require(self, service, what: str):
        if service is None:
            raise ClientError(f"{what} is not configured on this server")
        return service

    async def _write(self, event: Event) -> None:
        self.writer.write(encode_event(event))
        await self.writer.drain()

    async def _fail(self, message: str, code: str) -> bool:
        _LOGGER.warning("%s: %s", self.peer, message)
        self._reset()
        try:
            await self._write(Error(text=message, code=code).event())
        except (ConnectionError, RuntimeError):
            pass
        return False


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("text is not a string")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _voice_name(voice: object) -> str | None:
    return _optional_text(getattr(voice, "name", None)) if voice is not None else None
