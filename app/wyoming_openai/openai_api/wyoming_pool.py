"""The Wyoming servers behind the API: their ``info`` (see catalog.py) and one exchange per request.

Connections are kept alive between requests, but only after an answer was read to its last event,
so a reused connection never carries a previous request's late events; one that the server closed
while idle is noticed before any answer and the request goes again on a fresh connection (Wyoming
requests have no side effects). What the servers offer is cached and refreshed in the background; a
request for a model that is not (yet) known triggers one bounded refresh, so a late server is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, write_event
from wyoming.info import Describe, Info, SelectProgram
from wyoming.tts import Synthesize, SynthesizeVoice

from ..audio import PcmFormat
from .catalog import AsrModel, Catalog, TtsModel, build_catalog
from .errors import WyomingFailed, WyomingTimeout, WyomingUnavailable

_LOGGER = logging.getLogger(__name__)

ASR_RATE = 16000  # what Wyoming speech-to-text servers expect (Home Assistant sends the same)
ASR_CHUNK_BYTES = 2048 * 2  # 128 ms at 16 kHz: as Home Assistant's satellites send it
MIN_ON_DEMAND_REFRESH = 5.0  # seconds between refreshes triggered by unknown models
SEND_BATCH_BYTES = 256 * 1024
DESCRIBE_TIMEOUT = 10.0
# Kept-alive connections: a connect and an accept saved per request. Fewer seconds idle than any
# server's own idle time-out (ours is 120 s) so a server rarely closes one under us.
IDLE_CONNECTIONS = 8  # per server and program
IDLE_SECONDS = 15.0


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0  # longest silence between two events of one answer


# --- one server -----------------------------------------------------------------------------------


@dataclass
class ServerState:
    uri: str
    source: str  # "config" or "zeroconf"
    info: Info | None = None  # the last Info it gave, kept while it is down so its models stay known
    error: str | None = None
    first_seen: int = 0


class Connection:
    """One Wyoming connection: events are written in batches (one send), read with a time-out.

    Built on the wyoming library's event framing (``write_event`` into a buffer, ``async_read_event``)
    rather than its AsyncClient, to batch writes and to see whether an idle connection was closed.
    """

    def __init__(self, uri: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.uri = uri
        self._reader = reader
        self._writer = writer
        self.idle_since = 0.0

    @classmethod
    async def open(cls, uri: str, timeout: float) -> Connection:
        parts = urlsplit(uri)
        try:
            async with asyncio.timeout(timeout):
                if parts.scheme == "unix":
                    reader, writer = await asyncio.open_unix_connection(parts.path)
                else:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except (asyncio.TimeoutError, TimeoutError):
            raise WyomingUnavailable(f"Wyoming server {uri} did not accept a connection within {timeout:g} s") from None
        except OSError as err:
            raise WyomingUnavailable(
                f"Wyoming server {uri} is unreachable ({err.strerror or type(err).__name__})"
            ) from None
        return cls(uri, reader, writer)

    async def send(self, events: Iterable[Event]) -> None:
        """Write events in batches of about SEND_BATCH_BYTES: one send for a whole short request."""
        buffer = io.BytesIO()
        for event in events:
            write_event(event, buffer)
            if buffer.tell() >= SEND_BATCH_BYTES:
                self._writer.write(buffer.getvalue())
                await self._writer.drain()
                buffer = io.BytesIO()
        if buffer.tell():
            self._writer.write(buffer.getvalue())
            await self._writer.drain()

    async def read(self, waiting_for: str, timeout: float) -> Event:
        async with asyncio.timeout(timeout):
            event = await async_read_event(self._reader)
        if event is None:
            raise _Closed(f"Wyoming server {self.uri} closed the connection before sending {waiting_for}")
        if Error.is_type(event.type):
            error = Error.from_event(event)
            raise WyomingFailed(f"Wyoming server {self.uri} reported an error: {error.text}")
        return event

    @property
    def usable(self) -> bool:
        return not self._reader.at_eof() and not self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()


class _Closed(WyomingFailed):
    """The server closed the connection: on a kept-alive connection before any answer, a stale one."""


@contextlib.asynccontextmanager
async def _guard(uri: str, timeouts: Timeouts) -> AsyncIterator[None]:
    """Network failures while talking to a server, as the API's errors."""
    try:
        yield
    except (asyncio.TimeoutError, TimeoutError):
        raise WyomingTimeout(f"Wyoming server {uri} sent nothing for {timeouts.read:g} s") from None
    except (ConnectionError, asyncio.IncompleteReadError) as err:
        raise WyomingFailed(f"Wyoming server {uri} dropped the connection ({type(err).__name__})") from None


async def describe(uri: str, timeouts: Timeouts) -> Info:
    connection = await Connection.open(uri, timeouts.connect)
    try:
        async with _guard(uri, timeouts):
            await connection.send([Describe().event()])
            while True:
                event = await connection.read("its info", timeouts.read)
                if Info.is_type(event.type):
                    try:
                        return Info.from_event(event)
                    except (KeyError, TypeError, ValueError) as err:
                        raise WyomingFailed(
                            f"Wyoming server {uri} sent an info event that cannot be read ({err})"
                        ) from None
    finally:
        connection.close()


# --- the pool -------------------------------------------------------------------------------------


class WyomingPool:
    def __init__(
        self,
        uris: Iterable[str],
        timeouts: Timeouts,
        refresh_interval: float = 60.0,
        min_on_demand_refresh: float = MIN_ON_DEMAND_REFRESH,
    ) -> None:
        self.timeouts = timeouts
        self.refresh_interval = refresh_interval
        self.min_on_demand_refresh = min_on_demand_refresh
        self._servers: dict[str, ServerState] = {}
        for uri in uris:
            self._servers.setdefault(uri, ServerState(uri, "config"))
        self.catalog = Catalog()
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = 0.0
        self._refresher: asyncio.Task[None] | None = None
        self._idle: dict[tuple[str, str | None], list[Connection]] = {}

    # Servers come and go (zeroconf); the catalog follows on the next refresh.
    def add(self, uri: str, source: str = "zeroconf") -> bool:
        if uri in self._servers:
            return False
        self._servers[uri] = ServerState(uri, source)
        return True

    def remove(self, uri: str) -> None:
        state = self._servers.get(uri)
        if state is not None and state.source != "config":
            del self._servers[uri]
            self._close_idle(uri)
            self._rebuild()

    @property
    def servers(self) -> list[ServerState]:
        return list(self._servers.values())

    def unreachable(self) -> list[str]:
        return [s.uri for s in self._servers.values() if s.error is not None]

    async def start(self) -> None:
        await self.refresh()
        if self.refresh_interval > 0:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="wyoming-refresh")

    async def close(self) -> None:
        self._close_idle(None)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception:  # a refresh must never end the loop
                _LOGGER.exception("Refreshing the Wyoming servers' info failed")

    async def refresh(self) -> None:
        async with self._refresh_lock:
            states = list(self._servers.values())
            # Info comes at once from a healthy server: a hung one must not hold a request (or start-up)
            # for the whole read time-out, which is sized for long transcriptions.
            timeouts = Timeouts(self.timeouts.connect, min(self.timeouts.read, DESCRIBE_TIMEOUT))
            results = await asyncio.gather(*(describe(s.uri, timeouts) for s in states), return_exceptions=True)
            for state, result in zip(states, results, strict=True):
                if isinstance(result, Info):
                    if state.error is not None or state.info is None:
                        _LOGGER.info("Wyoming server %s: %s", state.uri, _summary(result))
                    state.info, state.error = result, None
                    state.first_seen = state.first_seen or int(time.time())
                elif isinstance(result, Exception):
                    message = (
                        str(result)
                        if isinstance(result, (WyomingFailed, WyomingUnavailable, WyomingTimeout))
                        else repr(result)
                    )
                    if state.error != message:
                        _LOGGER.warning("%s", message)
                    state.error = message
                else:  # CancelledError and friends: not ours to swallow
                    raise result
            self._last_refresh = time.monotonic()
            self._rebuild()

    async def refresh_if_stale(self) -> None:
        """One refresh for a request that named an unknown model, at most every few seconds."""
        if time.monotonic() - self._last_refresh >= self.min_on_demand_refresh:
            await self.refresh()

    def _rebuild(self) -> None:
        self.catalog = build_catalog(
            (s.uri, s.info, s.first_seen) for s in self._servers.values() if s.info is not None
        )

    # --- connections --------------------------------------------------------------------------------

    def _close_idle(self, uri: str | None) -> None:
        for key in [k for k in self._idle if uri is None or k[0] == uri]:
            for connection in self._idle.pop(key):
                connection.close()

    def _take_idle(self, key: tuple[str, str | None]) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if connection.usable and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    def _release(self, key: tuple[str, str | None], connection: Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if connection.usable and len(idle) < IDLE_CONNECTIONS and connection.uri in self._servers:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()

    async def _start(
        self, key: tuple[str, str | None], request: Callable[[], Iterator[Event]], waiting_for: str
    ) -> tuple[Connection, Event]:
        """Send the request and read the first event of the answer, on a kept-alive connection if any."""
        uri, program = key
        connection = self._take_idle(key)
        if connection is not None:
            try:
                await connection.send(request())
                return connection, await connection.read(waiting_for, self.timeouts.read)
            except (_Closed, ConnectionError, asyncio.IncompleteReadError):
                connection.close()  # closed while idle: the request goes again, on a fresh connection
            except BaseException:
                connection.close()
                raise
        connection = await Connection.open(uri, self.timeouts.connect)
        try:
            first = [SelectProgram(name=program).event()] if program else []
            await connection.send([*first, *request()])
            return connection, await connection.read(waiting_for, self.timeouts.read)
        except BaseException:
            connection.close()
            raise

    async def _exchange(
        self,
        model: TtsModel | AsrModel,
        request: Callable[[], Iterator[Event]],
        waiting_for: str,
        is_last: Callable[[Event], bool],
    ) -> AsyncIterator[Event]:
        """The answer's events up to the last; the connection is kept only if the answer was read whole."""
        key = (model.server, model.program if model.select_program else None)
        clean = False
        connection: Connection | None = None
        try:
            async with _guard(model.server, self.timeouts):
                connection, event = await self._start(key, request, waiting_for)
                while True:
                    last = is_last(event)
                    clean = last  # the consumer may stop right after the last event
                    yield event
                    if last:
                        return
                    event = await connection.read(waiting_for, self.timeouts.read)
        finally:
            if connection is not None:
                if clean:
                    self._release(key, connection)
                else:
                    connection.close()

    # --- requests -----------------------------------------------------------------------------------

    async def synthesize(
        self, model: TtsModel, text: str, voice: str | None, speaker: str | None
    ) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM) pieces as the server sends them; the first piece may be empty (its format)."""
        uri = model.server
        synth_voice = SynthesizeVoice(name=voice, speaker=speaker) if voice else None
        request = Synthesize(text=text, voice=synth_voice).event()
        events = self._exchange(
            model, lambda: iter([request]), "the end of the audio", lambda e: AudioStop.is_type(e.type)
        )
        fmt: PcmFormat | None = None
        async with contextlib.aclosing(events):
            async for event in events:
                if AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    fmt = _pcm_format(uri, start.rate, start.width, start.channels)
                    yield fmt, b""
                elif AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    chunk_fmt = _pcm_format(uri, chunk.rate, chunk.width, chunk.channels)
                    if fmt is None:
                        fmt = chunk_fmt  # no audio-start: the chunk says what it is
                    elif chunk_fmt != fmt:
                        raise WyomingFailed(f"Wyoming server {uri} changed the audio format mid-stream")
                    if chunk.audio:
                        yield fmt, chunk.audio
                elif AudioStop.is_type(event.type) and fmt is None:
                    raise WyomingFailed(f"Wyoming server {uri} ended the speech without sending audio")

    async def transcribe(
        self,
        model: AsrModel,
        pcm: bytes,
        *,
        language: str | None,
        context: dict[str, Any] | None,
    ) -> AsyncIterator[TranscriptChunk | Transcript]:
        """Transcript chunks as the server streams them, then the final Transcript."""

        def request() -> Iterator[Event]:
            yield Transcribe(name=model.model_name, language=language, context=context).event()
            yield AudioStart(rate=ASR_RATE, width=2, channels=1, timestamp=0).event()
            view = memoryview(pcm)
            for offset in range(0, len(pcm), ASR_CHUNK_BYTES):
                yield AudioChunk(
                    rate=ASR_RATE, width=2, channels=1, audio=bytes(view[offset : offset + ASR_CHUNK_BYTES]),
                    timestamp=offset * 1000 // (ASR_RATE * 2),
                ).event()  # fmt: skip
            yield AudioStop(timestamp=len(pcm) * 1000 // (ASR_RATE * 2)).event()

        events = self._exchange(model, request, "a transcript", lambda e: Transcript.is_type(e.type))
        async with contextlib.aclosing(events):
            async for event in events:
                if TranscriptChunk.is_type(event.type):
                    yield TranscriptChunk.from_event(event)
                elif Transcript.is_type(event.type):
                    yield Transcript.from_event(event)


def _pcm_format(uri: str, rate: int, width: int, channels: int) -> PcmFormat:
    if width not in (1, 2, 4) or channels not in (1, 2) or rate <= 0:
        raise WyomingFailed(
            f"Wyoming server {uri} sent audio this API cannot convert (rate {rate}, width {width}, channels {channels})"
        )
    return PcmFormat(rate, width, channels)


def _summary(info: Info) -> str:
    parts = [f"TTS {p.name} ({len(p.voices)} voices)" for p in info.tts if p.installed]
    parts += [f"ASR {p.name} ({', '.join(m.name for m in p.models)})" for p in info.asr if p.installed]
    return "; ".join(parts) or "no speech services"
