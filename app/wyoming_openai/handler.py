"""The Wyoming conversation with one client: events in, calls on STT/TTS, events out.

Failures end with an ``error`` event and a closed connection: Home Assistant ignores ``error``
and only notices that something went wrong when the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .audio import AudioDecodeError, PcmFormat
from .catalog import Catalog, Voice
from .framing import encode_event
from .monitor import Monitor
from .settings import Settings
from .streaming import SentenceSplitter, SpeechStream
from .stt import Transcriber, Utterance, UtteranceTooLong
from .tts import Synthesizer
from .upstream import UpstreamError

if TYPE_CHECKING:
    from .connection import Connection
    from .realtime import RealtimeTranscription

_LOGGER = logging.getLogger(__name__)

MAX_STREAMED_TEXT = 64 * 1024  # characters of one streamed synthesis


class ClientError(Exception):
    """The client sent something we cannot act on; the text says what."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    transcriber: Transcriber | None  # failover.FailoverTranscriber: the same calls, over primary + fallback
    synthesizer: Synthesizer | None  # failover.FailoverSynthesizer
    monitor: Monitor = field(default_factory=Monitor)


class Handler:
    def __init__(self, services: Services, writer: Connection, peer: str) -> None:
        self.services = services
        self.writer = writer
        self.peer = peer
        self.closing: asyncio.Future | None = None
        self.live: RealtimeTranscription | None = None  # a Realtime session taking the audio as it comes
        self._reset()
        services.monitor.client_connected(self)

    def _reset(self) -> None:
        self.stt_model: str | None = None
        self.stt_language: str | None = None
        self.utterance: Utterance | None = None
        self.transcribing = False
        self.stream_voice: str | None = None
        self.stream_text: list[str] | None = None  # a streaming session whose model speaks at the end
        self.stream: SpeechStream | None = None  # a streaming session that speaks as text arrives
        self.stream_length = 0
        self.audio_format: PcmFormat | None = None  # set by the first audio of one reply
        self.audio_samples = 0

    # --- dispatch ----------------------------------------------------------------------------

    def handle_now(self, event: Event) -> bool:
        """Handle, as it is read, an event that needs no waiting; False: it must go through handle_event.

        Only called while this handler waits for its next event, so order is kept. Audio chunks and
        streamed text are most of what a client sends: taking them here skips a queue and a task
        switch for each 10 ms of audio or each token.
        """
        kind = event.type
        if kind == "audio-chunk":
            utterance, payload = self.utterance, event.payload
            if utterance is None or self.live is not None or not payload or not utterance.has_room(len(payload)):
                return False
            utterance.add(payload)
            return True
        if kind == "synthesize-chunk":  # one per LLM token while Home Assistant streams a reply
            text = event.data.get("text")
            if not self._in_stream() or not isinstance(text, str) or self.stream_length + len(text) > MAX_STREAMED_TEXT:
                return False
            self._on_synthesize_chunk(text)
            return True
        if kind == "describe":
            self.writer.write(self.services.catalog.info_bytes)
            return True
        return False

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
            await self._send(self.services.catalog.info_bytes)
        elif AudioChunk.is_type(kind):
            await self._on_audio_chunk(AudioChunk.from_event(event))
        elif Transcribe.is_type(kind):
            transcribe = Transcribe.from_event(event)
            self._require(self.services.transcriber, "speech-to-text")
            await self._close_live()
            self.stt_model = self.services.catalog.stt_model(_optional_text(transcribe.name))
            self.stt_language = _optional_text(transcribe.language)
            self.transcribing = True
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            await self._close_live()
            self.utterance = await self._new_utterance(PcmFormat(start.rate, start.width, start.channels))
        elif AudioStop.is_type(kind):
            await self._on_audio_stop()
        elif Synthesize.is_type(kind):
            if not self._in_stream():  # inside a streaming session the full text is a duplicate
                synthesize = Synthesize.from_event(event)
                await self._speak(_text(synthesize.text), _voice_name(synthesize.voice))
        elif SynthesizeStart.is_type(kind):
            self._on_synthesize_start(SynthesizeStart.from_event(event))
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

    async def _new_utterance(self, fmt: PcmFormat) -> Utterance:
        transcriber = self._require(self.services.transcriber, "speech-to-text")
        if fmt.rate < 1000 or fmt.rate > 384_000 or fmt.width not in (1, 2, 3, 4) or not 1 <= fmt.channels <= 8:
            raise ClientError(f"unsupported audio format: {fmt.rate} Hz, {fmt.width} bytes, {fmt.channels} channels")
        model = self.stt_model or self.services.catalog.stt_model(None)
        realtime = transcriber.is_realtime(model)
        if realtime and fmt.channels > 2:
            raise ClientError(f"unsupported audio format for the Realtime API: {fmt.channels} channels")
        utterance = Utterance(fmt, self.services.settings.stt_max_seconds, keep=not realtime)
        if realtime:
            # Connect while the user is still speaking: the transcript is ready right after audio-stop.
            self.live = await transcriber.realtime.open(model, self._language())  # type: ignore[union-attr]
        return utterance

    def _language(self) -> str:
        return self.stt_language or self.services.settings.languages[0]

    async def _on_audio_chunk(self, chunk: AudioChunk) -> None:
        if self.utterance is None:
            if not self.transcribing:
                raise ClientError("audio-chunk without transcribe or audio-start")
            # Lenient: some clients skip audio-start; the chunk says its own format.
            self.utterance = await self._new_utterance(PcmFormat(chunk.rate, chunk.width, chunk.channels))
        self.utterance.add(chunk.audio)
        if self.live is not None:
            await self.live.send_audio(chunk.audio, self.utterance.format)

    async def _on_audio_stop(self) -> None:
        transcriber = self.services.transcriber
        utterance, live = self.utterance, self.live
        if utterance is None or transcriber is None:
            raise ClientError("audio-stop without audio-start")
        model = self.stt_model or self.services.catalog.stt_model(None)
        language = self._language()
        self.live = None
        self._reset()
        if live is not None:
            try:
                text = await self._relay_transcript(live.finish(), language)
            finally:
                await live.close()
        elif model in self.services.settings.stt_streaming_models:
            text = await self._relay_transcript(transcriber.transcribe_stream(utterance, model, language), language)
        else:
            text = await transcriber.transcribe(utterance, model, language)
        _LOGGER.info("Transcribed %.1f s for %s: %d characters", utterance.seconds, self.peer, len(text))
        await self._write(Transcript(text=text).event())

    async def _relay_transcript(self, results: AsyncIterator[tuple[bool, str]], language: str) -> str:
        """Transcript chunks as the upstream forms them; returns the final text."""
        await self._write(TranscriptStart(language=language).event())
        async with aclosing(results):
            async for done, text in results:
                if done:
                    await self._write(TranscriptStop().event())
                    return text
                await self._write(TranscriptChunk(text=text).event())
        raise UpstreamError("STT upstream ended its stream without a transcript")

    async def _close_live(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await live.close()

    # --- text to speech ----------------------------------------------------------------------

    def _in_stream(self) -> bool:
        return self.stream is not None or self.stream_text is not None

    def _on_synthesize_start(self, start: SynthesizeStart) -> None:
        synthesizer = self._require(self.services.synthesizer, "text-to-speech")
        if self._in_stream():
            raise ClientError("synthesize-start inside a streaming session")
        self.stream_voice = _voice_name(start.voice)
        self.stream_length = 0
        voice = self.services.catalog.voice(self.stream_voice)
        if voice is not None and voice.model in self.services.settings.tts_streaming_models:
            self.stream = self._new_stream(synthesizer, voice, start.voice.language if start.voice else None)
        else:
            self.stream_text = []

    def _new_stream(self, synthesizer: Synthesizer, voice: Voice, language: str | None) -> SpeechStream:
        settings = self.services.settings
        splitter = SentenceSplitter(
            language or settings.languages[0], settings.tts_streaming_min_words, settings.tts_streaming_max_chars
        )
        stream = SpeechStream(synthesizer, voice, splitter, settings.tts_concurrent_requests, self._emit_audio)
        stream.player.add_done_callback(self._on_player_done)
        return stream

    def _on_player_done(self, player: asyncio.Task) -> None:
        # A sentence failed while the client was still sending text: tell it and hang up now,
        # rather than at synthesize-stop. (At synthesize-stop, finish() raises it instead.)
        if player.cancelled() or player.exception() is None or self.stream is None or self.stream.finishing:
            return
        error = player.exception()
        self.closing = asyncio.ensure_future(self._fail(str(error), type(error).__name__))
        self.closing.add_done_callback(lambda _: self.writer.close())

    def _on_synthesize_chunk(self, text: str) -> None:
        if not self._in_stream():
            raise ClientError("synthesize-chunk without synthesize-start")
        self.stream_length += len(text)
        if self.stream_length > MAX_STREAMED_TEXT:
            raise ClientError(f"streamed text longer than {MAX_STREAMED_TEXT} characters")
        if self.stream is not None:
            self.stream.add_text(text)
        else:
            self.stream_text.append(text)  # type: ignore[union-attr]

    async def _on_synthesize_stop(self) -> None:
        if not self._in_stream():
            raise ClientError("synthesize-stop without synthesize-start")
        stream, text, voice = self.stream, "".join(self.stream_text or ()), self.stream_voice
        if stream is not None:
            stream.finishing = True
            await stream.finish()
            await self._end_audio(stream.sentences)
        elif text.strip():
            await self._speak(text, voice)
        self._reset()
        await self._write(SynthesizeStopped().event())

    async def _speak(self, text: str, voice_name: str | None) -> None:
        synthesizer = self._require(self.services.synthesizer, "text-to-speech")
        voice = self.services.catalog.voice(voice_name)
        if voice is None:
            raise ClientError("no voice is configured")
        if not text.strip():
            raise ClientError("nothing to say: the text is empty")
        if self.services.settings.tts_split_text:
            stream = self.stream = self._new_stream(synthesizer, voice, None)
            stream.finishing = True
            stream.add_text(text)
            await stream.finish()
            self.stream = None
        else:
            async for fmt, pcm in synthesizer.synthesize(text, voice):
                await self._emit_audio(fmt, pcm)
        await self._end_audio(len(text))

    async def _emit_audio(self, fmt: PcmFormat, pcm: bytes) -> None:
        timestamp = self.audio_samples * 1000 // fmt.rate
        wire = encode_event(
            AudioChunk(rate=fmt.rate, width=fmt.width, channels=fmt.channels, audio=pcm, timestamp=timestamp).event()
        )
        if self.audio_format is None:
            self.audio_format = fmt
            # With the first audio, in one write: a send of its own delayed that audio by 0.2 ms.
            wire = encode_event(AudioStart(rate=fmt.rate, width=fmt.width, channels=fmt.channels).event()) + wire
        self.audio_samples += len(pcm) // fmt.frame_bytes
        await self._send(wire)

    async def _end_audio(self, amount: int) -> None:
        fmt, samples = self.audio_format, self.audio_samples
        self.audio_format, self.audio_samples = None, 0
        if fmt is None:
            if amount:
                raise AudioDecodeError("TTS upstream sent no audio")
            return
        await self._write(AudioStop(timestamp=samples * 1000 // fmt.rate).event())
        _LOGGER.info("Spoke to %s: %.1f s of audio", self.peer, samples / fmt.rate)

    async def disconnect(self) -> None:
        """The connection is over: stop any synthesis or Realtime session still running for it."""
        self.services.monitor.client_disconnected(self)
        await self._close_live()
        if self.stream is not None:
            await self.stream.cancel()
            self.stream = None

    # --- plumbing ----------------------------------------------------------------------------

    def _require(self, service, what: str):
        if service is None:
            raise ClientError(f"{what} is not configured on this server")
        return service

    async def _write(self, event: Event) -> None:
        await self._send(encode_event(event))

    async def _send(self, wire: bytes) -> None:
        self.writer.write(wire)
        await self.writer.drain()

    async def _fail(self, message: str, code: str) -> bool:
        _LOGGER.warning("%s: %s", self.peer, message)
        await self.disconnect()
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
