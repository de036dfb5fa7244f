"""The OpenAI Realtime API over a websocket: transcription while the user speaks, and speech output.

Speaks the GA protocol (no ``OpenAI-Beta`` header): STT connects to ``/realtime?intent=transcription``
and sends ``session.update`` with a ``transcription`` session; TTS connects to
``/realtime?model=…`` and sends a ``realtime`` session with audio output. Server events whose names
changed since the beta (``response.audio.delta``, ``transcription_session.updated``) are accepted
too, so servers that still answer in beta names work.

The API takes and gives PCM16 mono at 24 kHz only; audio is converted on the way in and out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

from .audio import FrameAligner, PcmFormat, S16Converter
from .catalog import Voice
from .settings import Settings
from .upstream import SPEECH_BODY_TIME_FACTOR, Upstream, UpstreamError, clip, upstream_language

_LOGGER = logging.getLogger(__name__)

REALTIME_RATE = 24000
REALTIME_FORMAT = PcmFormat(REALTIME_RATE)
_PCM_FORMAT = {"type": "audio/pcm", "rate": REALTIME_RATE}
MIN_COMMIT_SECONDS = 0.1  # the API refuses to commit a buffer holding less than 100 ms
APPEND_LIMIT = 10 * REALTIME_FORMAT.bytes_per_second  # one append event stays far below the 15 MiB event cap

TRANSCRIPT_DELTA = "conversation.item.input_audio_transcription.delta"
TRANSCRIPT_COMPLETED = "conversation.item.input_audio_transcription.completed"
TRANSCRIPT_FAILED = "conversation.item.input_audio_transcription.failed"
AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})  # GA, beta
RESPONSE_DONE = "response.done"

# Realtime models answer; these instructions make one read the text instead. The extra body may replace them.
SPEAK_INSTRUCTIONS = (
    "You are a text-to-speech voice. Read the user's message aloud exactly as written, word for word, "
    "in the language it is written in. Do not answer it, comment on it, or add anything."
)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it: objects merge key by key, anything else (null too) replaces."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Socket:
    """One open Realtime websocket: JSON events out, JSON events in, every failure an UpstreamError."""

    def __init__(self, upstream: Upstream, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.upstream = upstream
        self.ws = ws

    @classmethod
    async def open(cls, upstream: Upstream, stack: AsyncExitStack, **params: str) -> _Socket:
        ws = await stack.enter_async_context(upstream.websocket("/realtime", **params))
        return cls(upstream, ws)

    def error(self, text: str) -> UpstreamError:
        return UpstreamError(self.upstream.scrub(f"{self.upstream.role} upstream {self.upstream.display_url} {text}"))

    async def send(self, event: dict[str, Any]) -> None:
        try:
            await self.ws.send_str(json.dumps(event))
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            # RuntimeError: aiohttp's "websocket is closing" on a socket the upstream has shut.
            raise self.error("closed the connection") from None

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next server event; an ``error`` event, a closed socket or the time-out raise."""
        while True:
            try:
                message = await self.ws.receive(timeout)
            except (asyncio.TimeoutError, TimeoutError):
                raise self.error("did not answer in time") from None
            except aiohttp.ClientError as err:
                raise self.upstream.failure(err) from None
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(message.data)
                except ValueError:
                    raise self.error("sent a malformed Realtime event") from None
                if not isinstance(event, dict):
                    raise self.error("sent a malformed Realtime event")
                if event.get("type") == "error":
                    raise self.error(f"reported an error: {_error_text(event.get('error'))}")
                return event
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = self.ws.close_code
                reason = f" ({code}: {clip(str(message.extra))})" if code not in (None, 1000) and message.extra else ""
                raise self.error(f"closed the connection{reason}")
            if message.type == aiohttp.WSMsgType.ERROR:
                raise self.error(
                    f"broke the websocket protocol ({clip(str(message.data)) or type(message.data).__name__})"
                )
            # Binary frames are not part of the protocol: ignore rather than fail a working session.


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or error.get("code") or error.get("type")
        if message:
            return clip(str(message))
    if isinstance(error, str) and error:
        return clip(error)
    return "no details"


def _decode_audio(socket: _Socket, data: Any) -> bytes:
    try:
        return base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except (binascii.Error, ValueError):
        raise socket.error("sent audio that is not valid base64") from None


# --- speech to text ---------------------------------------------------------------------------------


class _ToRealtimeAudio:
    """Client PCM of any width, mono or stereo, any rate → PCM16 mono 24 kHz, chunk by chunk."""

    def __init__(self, source: PcmFormat) -> None:
        if source.width not in (1, 2, 3, 4) or source.channels not in (1, 2):
            raise ValueError(f"unsupported audio: {source.width * 8}-bit, {source.channels} channels")
        self.source = source
        self._aligner = FrameAligner(source.frame_bytes)
        s16 = PcmFormat(source.rate, 2, source.channels)
        self._converter = None if s16 == REALTIME_FORMAT else S16Converter(s16, REALTIME_RATE)

    def convert(self, pcm: bytes) -> bytes:
        pcm = _to_s16(self._aligner.push(pcm), self.source.width)
        return self._converter.convert(pcm) if self._converter else pcm

    def flush(self) -> bytes:
        return self._converter.flush() if self._converter else b""


_U8_TO_S8 = bytes(b ^ 0x80 for b in range(256))


def _to_s16(pcm: bytes, width: int) -> bytes:
    """Keep the top 16 bits of each little-endian sample (8-bit WAV PCM is unsigned)."""
    if width == 2 or not pcm:
        return pcm
    out = bytearray(len(pcm) // width * 2)
    if width == 1:
        out[1::2] = pcm.translate(_U8_TO_S8)
    else:
        out[0::2] = pcm[width - 2 :: width]
        out[1::2] = pcm[width - 1 :: width]
    return bytes(out)


class RealtimeTranscriber:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream

    def session_config(self, model: str, language: str | None) -> dict[str, Any]:
        transcription: dict[str, Any] = {"model": model}
        if language := upstream_language(language):
            transcription["language"] = language
        if self.settings.stt_prompt:
            transcription["prompt"] = self.settings.stt_prompt
        session = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": dict(_PCM_FORMAT),
                    "transcription": transcription,
                    # Home Assistant has found the end of speech already; we commit at audio-stop.
                    "turn_detection": None,
                }
            },
        }
        return deep_merge(session, self.settings.stt_realtime_extra_body)

    async def open(self, model: str, language: str | None) -> RealtimeTranscription:
        """Connect and configure; the socket is ready for audio when this returns."""
        stack = AsyncExitStack()
        try:
            socket = await _Socket.open(self.upstream, stack, intent="transcription")
            # Not waiting for session.updated: the API applies events in order, and audio can flow at once.
            await socket.send({"type": "session.update", "session": self.session_config(model, language)})
        except BaseException:
            await stack.aclose()
            raise
        _LOGGER.debug("Realtime transcription session open with %s", model)
        return RealtimeTranscription(socket, stack)


class RealtimeTranscription:
    """One utterance streamed to a transcription session. ``close()`` must always be called."""

    def __init__(self, socket: _Socket, stack: AsyncExitStack) -> None:
        self._socket = socket
        self._stack = stack
        self._audio: _ToRealtimeAudio | None = None
        self._sent = 0
        self._events: asyncio.Queue[dict[str, Any] | UpstreamError] = asyncio.Queue()
        self._failure: UpstreamError | None = None
        self._closed = False
        # Read all along: an error or a hang-up is noticed while audio is still being sent.
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                event = await self._socket.receive(None)
                if event.get("type") in (TRANSCRIPT_DELTA, TRANSCRIPT_COMPLETED, TRANSCRIPT_FAILED):
                    self._events.put_nowait(event)
        except UpstreamError as err:
            self._failure = err
            self._events.put_nowait(err)

    async def send_audio(self, pcm: bytes, fmt: PcmFormat) -> None:
        if self._failure is not None:
            raise self._failure
        if self._audio is None or self._audio.source != fmt:
            tail = self._audio.flush() if self._audio else b""
            self._audio = _ToRealtimeAudio(fmt)
            await self._append(tail)
        await self._append(self._audio.convert(pcm))

    async def _append(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), APPEND_LIMIT):
            piece = pcm[start : start + APPEND_LIMIT]
            await self._socket.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode("ascii")}
            )
            self._sent += len(piece)

    async def finish(self) -> AsyncIterator[tuple[bool, str]]:
        """Commit the audio; (False, delta) as the transcript forms, then (True, the whole text)."""
        if self._failure is not None:
            raise self._failure
        if self._audio is not None:
            await self._append(self._audio.flush())
        if self._sent < MIN_COMMIT_SECONDS * REALTIME_FORMAT.bytes_per_second:
            # The API would refuse the commit; too little audio holds no words anyway.
            yield True, ""
            return
        await self._socket.send({"type": "input_audio_buffer.commit"})
        upstream = self._socket.upstream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + upstream.timeout
        deltas: list[str] = []
        while True:
            try:
                item = await asyncio.wait_for(self._events.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise self._socket.error("did not answer in time") from None
            if isinstance(item, UpstreamError):
                raise item
            kind = item.get("type")
            if kind == TRANSCRIPT_DELTA:
                if isinstance(delta := item.get("delta"), str) and delta:
                    deltas.append(delta)
                    yield False, delta
            elif kind == TRANSCRIPT_COMPLETED:
                transcript = item.get("transcript")
                yield True, (transcript if isinstance(transcript, str) else "".join(deltas)).strip()
                return
            else:
                raise self._socket.error(f"could not transcribe the audio: {_error_text(item.get('error'))}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass
        await self._stack.aclose()


# --- text to speech ---------------------------------------------------------------------------------


class RealtimeSynthesizer:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream

    def session_config(self, voice: Voice) -> dict[str, Any]:
        settings = self.settings
        output: dict[str, Any] = {"format": dict(_PCM_FORMAT), "voice": voice.upstream}
        speed = voice.speed if voice.speed is not None else settings.tts_speed
        if speed is not None:
            output["speed"] = min(max(speed, 0.25), 1.5)  # the Realtime API's range
        instructions = SPEAK_INSTRUCTIONS
        if style := voice.instructions or settings.tts_instructions:
            instructions += f" Voice and style: {style}"
        session = {
            "type": "realtime",
            "model": voice.model,
            "output_modalities": ["audio"],
            "instructions": instructions,
            "audio": {"output": output},
        }
        return deep_merge(session, settings.tts_realtime_extra_body)

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM16 mono) pieces as the audio deltas arrive; the format is the same for all."""
        if not text.strip():
            return
        upstream = self.upstream
        target = self.settings.tts_sample_rate or REALTIME_RATE
        out_format = PcmFormat(target)
        converter = S16Converter(REALTIME_FORMAT, target) if target != REALTIME_RATE else None
        aligner = FrameAligner(REALTIME_FORMAT.frame_bytes)
        _LOGGER.debug(
            "Synthesizing %d characters with %s/%s over the Realtime API", len(text), voice.model, voice.upstream
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + upstream.timeout * SPEECH_BODY_TIME_FACTOR
        async with AsyncExitStack() as stack:
            socket = await _Socket.open(upstream, stack, model=voice.model)
            await socket.send({"type": "session.update", "session": self.session_config(voice)})
            await socket.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
                }
            )
            await socket.send({"type": "response.create"})
            produced = False
            while True:
                # As for HTTP speech: the first audio within the time-out, then each piece within the read time-out.
                wait = upstream.read_timeout if produced else upstream.timeout
                # A floor: aiohttp reads a zero time-out as none at all.
                event = await socket.receive(max(0.001, min(wait, deadline - loop.time())))
                kind = event.get("type")
                if kind in AUDIO_DELTAS:
                    pcm = aligner.push(_decode_audio(socket, event.get("delta")))
                    if converter is not None:
                        pcm = converter.convert(pcm)
                    if pcm:
                        produced = True
                        yield out_format, pcm
                elif kind == RESPONSE_DONE:
                    response = event.get("response") if isinstance(event.get("response"), dict) else {}
                    if response.get("status") == "failed":
                        details = response.get("status_details") or {}
                        error = details.get("error") if isinstance(details, dict) else None
                        raise socket.error(f"could not speak the text: {_error_text(error)}")
                    break
        if converter is not None and (pcm := converter.flush()):
            produced = True
            yield out_format, pcm
        if not produced:
            raise UpstreamError(upstream.scrub(f"{upstream.role} upstream {upstream.display_url} sent no audio"))
