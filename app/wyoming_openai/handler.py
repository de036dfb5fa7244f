"""The Wyoming conversation with one client: events in, calls on STT/TTS, events out.

Failures end with an ``error`` event and a closed connection: Home Assistant ignores ``error``
and only notices that something went wrong when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .audio import AudioDecodeError, PcmFormat
from .catalog import Catalog, Voice
from .failover import FailoverSynthesizer, FailoverTranscriber
from .monitor import Monitor
from .settings import Settings
from .streaming import SentenceSplitter, SpeechStream
from .stt import Utterance, UtteranceTooLong
from .upstream import UpstreamError
from .wire import ClientReader, ProtocolError, encode_event

if TYPE_CHECKING:
    from .realtime import RealtimeTranscription

_LOGGER = logging.getLogger(__name__)

MAX_STREAMED_TEXT = 64 * 1024  # characters of one streamed synthesis
# Events whose handling waits on the upstream: while they run, a client that hangs up cancels them.
SLOW_EVENTS = frozenset({"audio-stop", "synthesize", "synthesize-stop"})
REFUSAL_DESCRIBE_WAIT = 1.0  # seconds a refused client gets to ask describe before it is closed


class ClientError(Exception):
    """The client sent something we cannot act on; the text says what."""


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    transcriber: FailoverTranscriber | None  # the primary upstream, and the fallback if there is one
    synthesizer: FailoverSynthesizer | None
    monitor: Monitor = field(default_factory=Monitor)


class Handler(AsyncEventHandler):
    """One client's conversation. ``run()`` reads its events within the limits and answers them."""

    def __init__(self, services: Services, reader: ClientReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.services = services
        self.client_left = reader.left
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "client"
        self.idle_since: float | None = None  # loop time it began waiting for the client; None while busy
        self.cut_reason = ("server shutting down", "Shutdown")  # what the server says when it cancels run()
        self.closing: asyncio.Future | None = None
        self.live: RealtimeTranscription | None = None  # a Realtime session taking the audio as it comes
        self._reset()

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

    # --- the conversation --------------------------------------------------------------------

    async def run(self) -> None:
        """Events until the client leaves, breaks the framing or a request fails; then close."""
        loop = asyncio.get_running_loop()
        _LOGGER.debug("%s connected", self.peer)
        self.services.monitor.client_connected(self)
        try:
            while True:
                self.idle_since = loop.time()
                event = await self.reader.read_event()
                self.idle_since = None
                if event is None:
                    break
                if event.type == "audio-chunk" and self._took_audio(event.payload):
                    continue
                if event.type in SLOW_EVENTS:
                    keep_going = await self._unless_client_leaves(self.handle_event(event))
                else:
                    keep_going = await self.handle_event(event)
                if not keep_going:
                    break
        except ProtocolError as err:
            _LOGGER.warning("%s: %s; closing", self.peer, err)
            await self._say_error(str(err), "ProtocolError")
        except ConnectionError:
            _LOGGER.debug("%s disconnected", self.peer)  # health checks do this every 30 s: not news
        except asyncio.CancelledError:  # cut off by the server: idle, evicted, or shutting down
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            text, code = self.cut_reason
            _LOGGER.info("%s: %s; disconnecting", self.peer, text)
            await self._say_error(text, code)
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            _LOGGER.exception("%s: unexpected failure", self.peer)
            await self._say_error("internal error in the proxy (see its log)", "InternalError")
        finally:
            self.idle_since = None
            await self.disconnect()
            self.writer.close()
            _LOGGER.debug("%s closed", self.peer)

    async def refuse(self, text: str) -> None:
        """Turn the client away; a ``describe`` it sends at once is answered first: a full server is
        not a dead one, and Home Assistant asks before anything else."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REFUSAL_DESCRIBE_WAIT):
                event = await self.reader.read_event()
                if event is not None and event.type == "describe":
                    await self._send(self.services.catalog.info_bytes)
        await self._say_error(text, "Busy")
        self.writer.close()

    async def _unless_client_leaves(self, work: Coroutine[Any, Any, bool]) -> bool:
        """Run a request; if the client hangs up meanwhile, cancel it (and its upstream call)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, self.client_left}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _LOGGER.info("%s left during its request; cancelled it", self.peer)
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
        if AudioChunk.is_type(kind):
            await self._on_audio_chunk(AudioChunk.from_event(event))
        elif SynthesizeChunk.is_type(kind):
            self._on_synthesize_chunk(_text(SynthesizeChunk.from_event(event).text))
        elif Describe.is_type(kind):
            await self._send(self.services.catalog.info_bytes)
        elif Transcribe.is_type(kind):
            await self._on_transcribe(Transcribe.from_event(event))
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
        elif SynthesizeStop.is_type(kind):
            await self._on_synthesize_stop()
        elif Ping.is_type(kind):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        else:
            _LOGGER.debug("Ignoring %s event from %s", kind, self.peer)
        return True

    # --- speech to text ----------------------------------------------------------------------

    async def _on_transcribe(self, transcribe: Transcribe) -> None:
        self._require(self.services.transcriber, "speech-to-text")
        await self._close_live()
        self.stt_model = self.services.catalog.stt_model(_optional_text(transcribe.name))
        self.stt_language = _optional_text(transcribe.language)
        self.transcribing = True

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

    def _took_audio(self, payload: bytes | None) -> bool:
        """Audio for the utterance under way, kept without the full dispatch: Home Assistant sends
        100 chunks a second, and this is most of what the proxy does for speech-to-text."""
        utterance = self.utterance
        if utterance is None or self.live is not None or not payload or not utterance.has_room(len(payload)):
            return False  # the full path says what is wrong, or sends the audio on to a Realtime session
        utterance.add(payload)
        return True

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
        _LOGGER.debug("Transcribed %.1f s for %s: %d characters", utterance.seconds, self.peer, len(text))
        await self.write_event(Transcript(text=text).event())

    async def _relay_transcript(self, results: AsyncIterator[tuple[bool, str]], language: str) -> str:
        """Transcript chunks as the upstream forms them; returns the final text."""
        await self.write_event(TranscriptStart(language=language).event())
        async with aclosing(results):
            async for done, text in results:
                if done:
                    await self.write_event(TranscriptStop().event())
                    return text
                await self.write_event(TranscriptChunk(text=text).event())
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

    def _new_stream(self, synthesizer: FailoverSynthesizer, voice: Voice, language: str | None) -> SpeechStream:
        settings = self.services.settings
        splitter = SentenceSplitter(  # in the language the voice speaks (a preset's own, if it has some)
            voice.language(language) or settings.languages[0],
            settings.tts_streaming_min_words,
            settings.tts_streaming_max_chars,
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
        await self.write_event(SynthesizeStopped().event())

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
        await self.write_event(AudioStop(timestamp=samples * 1000 // fmt.rate).event())
        _LOGGER.debug("Spoke to %s: %.1f s of audio", self.peer, samples / fmt.rate)

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

    async def write_event(self, event: Event) -> None:
        await self._send(encode_event(event))

    async def _send(self, wire: bytes) -> None:
        self.writer.write(wire)
        await self.writer.drain()

    async def _fail(self, message: str, code: str) -> bool:
        _LOGGER.warning("%s: %s", self.peer, message)
        await self.disconnect()
        self._reset()
        await self._say_error(message, code)
        return False

    async def _say_error(self, text: str, code: str) -> None:
        """Tell the client what went wrong, if it still listens; closing the connection is what
        Home Assistant notices."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.write_event(Error(text=text, code=code).event())


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("text is not a string")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _voice_name(voice: object) -> str | None:
    return _optional_text(getattr(voice, "name", None)) if voice is not None else None
