"""The Wyoming servers behind the API: what they offer (from ``describe``) and one call per request.

Each request opens its own connection: Wyoming servers keep per-connection state, a loopback connect
costs a fraction of a millisecond, and a fresh connection can never carry a previous request's late
events. What the servers offer is cached and refreshed in the background; a request for a model that
is not (yet) known triggers one bounded refresh, so a server that came up late is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info, SelectProgram
from wyoming.tts import Synthesize, SynthesizeVoice

from ..audio import PcmFormat
from .errors import WyomingFailed, WyomingTimeout, WyomingUnavailable

_LOGGER = logging.getLogger(__name__)

ASR_RATE = 16000  # what Wyoming speech-to-text servers expect (Home Assistant sends the same)
ASR_CHUNK_BYTES = 2048 * 2  # 128 ms at 16 kHz: as Home Assistant's satellites send it
MIN_ON_DEMAND_REFRESH = 5.0  # seconds between refreshes triggered by unknown models


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0  # longest silence between two events of one answer


# --- what the servers offer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    id: str
    name: str  # Wyoming voice name
    description: str | None
    languages: tuple[str, ...]
    speakers: tuple[str, ...]
    installed: bool


@dataclass(frozen=True)
class TtsModel:
    """A Wyoming TTS program: the OpenAI ``model`` of a speech request."""

    id: str
    server: str
    program: str
    select_program: bool  # the server offers several TTS programs: name ours on the connection
    owned_by: str
    description: str | None
    voices: dict[str, Voice]
    created: int

    def default_voice(self) -> Voice | None:
        for voice in self.voices.values():
            if voice.installed:
                return voice
        return next(iter(self.voices.values()), None)


@dataclass(frozen=True)
class AsrModel:
    """A Wyoming ASR model (or a program, meaning its default model)."""

    id: str
    server: str
    program: str
    select_program: bool
    model_name: str | None  # sent as Transcribe.name; None lets the server choose
    owned_by: str
    description: str | None
    languages: tuple[str, ...]
    streaming: bool
    created: int


@dataclass
class Catalog:
    tts: dict[str, TtsModel] = field(default_factory=dict)
    asr: dict[str, AsrModel] = field(default_factory=dict)

    def models(self) -> list[TtsModel | AsrModel]:
        return [*self.asr.values(), *self.tts.values()]

    def get(self, model_id: str) -> TtsModel | AsrModel | None:
        return self.asr.get(model_id) or self.tts.get(model_id)


def build_catalog(infos: Iterable[tuple[str, Info, int]]) -> Catalog:
    """Models from each server's Info, in server order; the first server to offer an id keeps it."""
    catalog = Catalog()
    for uri, info, created in infos:
        tts_programs = [p for p in info.tts if p.installed]
        for program in tts_programs:
            voices: dict[str, Voice] = {}
            for voice in program.voices:
                voices.setdefault(
                    voice.name,
                    Voice(
                        id=voice.name,
                        name=voice.name,
                        description=voice.description,
                        languages=tuple(voice.languages or ()),
                        speakers=tuple(s.name for s in voice.speakers or ()),
                        installed=voice.installed,
                    ),
                )
            _claim(
                catalog.tts,
                TtsModel(
                    id=program.name,
                    server=uri,
                    program=program.name,
                    select_program=len(tts_programs) > 1,
                    owned_by=program.attribution.name or "wyoming",
                    description=program.description,
                    voices=voices,
                    created=created,
                ),
            )
        asr_programs = [p for p in info.asr if p.installed]
        for program in asr_programs:
            common = {
                "server": uri,
                "program": program.name,
                "select_program": len(asr_programs) > 1,
                "streaming": bool(program.supports_transcript_streaming),
                "created": created,
            }
            models = [m for m in program.models if m.installed] or list(program.models)
            languages = tuple(dict.fromkeys(lang for m in models for lang in m.languages or ()))
            # The program's own name picks its default model, so a client need not know model names.
            _claim(
                catalog.asr,
                AsrModel(
                    id=program.name,
                    model_name=None,
                    owned_by=program.attribution.name or "wyoming",
                    description=program.description,
                    languages=languages,
                    **common,
                ),
            )
            for model in models:
                _claim(
                    catalog.asr,
                    AsrModel(
                        id=model.name,
                        model_name=model.name,
                        owned_by=model.attribution.name or program.attribution.name or "wyoming",
                        description=model.description,
                        languages=tuple(model.languages or ()),
                        **common,
                    ),
                )
    return catalog


def _claim(table: dict[str, Any], entry: TtsModel | AsrModel) -> None:
    existing = table.get(entry.id)
    if existing is None:
        table[entry.id] = entry
    elif existing.server != entry.server:
        _LOGGER.debug("Model %s is offered by %s and %s; using the first", entry.id, existing.server, entry.server)


# --- one server -----------------------------------------------------------------------------------


@dataclass
class ServerState:
    uri: str
    source: str  # "config" or "zeroconf"
    info: Info | None = None  # the last Info it gave, kept while it is down so its models stay known
    error: str | None = None
    first_seen: int = 0


def _client(uri: str, timeouts: Timeouts) -> AsyncClient:
    return AsyncClient.from_uri(uri, connect_timeout=timeouts.connect, read_timeout=timeouts.read)


@contextlib.asynccontextmanager
async def _connection(uri: str, timeouts: Timeouts) -> AsyncIterator[AsyncClient]:
    """A connected client; connection failures become WyomingUnavailable, silence WyomingTimeout."""
    client = _client(uri, timeouts)
    try:
        await client.connect()
    except (asyncio.TimeoutError, TimeoutError):
        raise WyomingUnavailable(
            f"Wyoming server {uri} did not accept a connection within {timeouts.connect:g} s"
        ) from None
    except OSError as err:
        raise WyomingUnavailable(f"Wyoming server {uri} is unreachable ({err.strerror or type(err).__name__})") from None
    try:
        yield client
    except (asyncio.TimeoutError, TimeoutError):
        raise WyomingTimeout(f"Wyoming server {uri} sent nothing for {timeouts.read:g} s") from None
    except (ConnectionError, asyncio.IncompleteReadError) as err:
        raise WyomingFailed(f"Wyoming server {uri} dropped the connection ({type(err).__name__})") from None
    finally:
        with contextlib.suppress(OSError):
            await client.disconnect()


async def _read(client: AsyncClient, uri: str, waiting_for: str) -> Event:
    event = await client.read_event()
    if event is None:
        raise WyomingFailed(f"Wyoming server {uri} closed the connection before sending {waiting_for}")
    if Error.is_type(event.type):
        error = Error.from_event(event)
        raise WyomingFailed(f"Wyoming server {uri} reported an error: {error.text}")
    return event


async def describe(uri: str, timeouts: Timeouts) -> Info:
    async with _connection(uri, timeouts) as client:
        await client.write_event(Describe().event())
        while True:
            event = await _read(client, uri, "its info")
            if Info.is_type(event.type):
                try:
                    return Info.from_event(event)
                except (KeyError, TypeError, ValueError) as err:
                    raise WyomingFailed(f"Wyoming server {uri} sent an info event that cannot be read ({err})") from None


# --- the pool -------------------------------------------------------------------------------------


class WyomingPool:
    def __init__(self, uris: Iterable[str], timeouts: Timeouts, refresh_interval: float = 60.0) -> None:
        self.timeouts = timeouts
        self.refresh_interval = refresh_interval
        self._servers: dict[str, ServerState] = {}
        for uri in uris:
            self._servers.setdefault(uri, ServerState(uri, "config"))
        self.catalog = Catalog()
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = 0.0
        self._refresher: asyncio.Task[None] | None = None

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
            results = await asyncio.gather(*(describe(s.uri, self.timeouts) for s in states), return_exceptions=True)
            for state, result in zip(states, results, strict=True):
                if isinstance(result, Info):
                    if state.error is not None or state.info is None:
                        _LOGGER.info("Wyoming server %s: %s", state.uri, _summary(result))
                    state.info, state.error = result, None
                    state.first_seen = state.first_seen or int(time.time())
                elif isinstance(result, Exception):
                    message = str(result) if isinstance(result, (WyomingFailed, WyomingUnavailable, WyomingTimeout)) else repr(result)
                    if state.error != message:
                        _LOGGER.warning("%s", message)
                    state.error = message
                else:  # CancelledError and friends: not ours to swallow
                    raise result
            self._last_refresh = time.monotonic()
            self._rebuild()

    async def refresh_if_stale(self) -> None:
        """One refresh for a request that named an unknown model, at most every few seconds."""
        if time.monotonic() - self._last_refresh >= MIN_ON_DEMAND_REFRESH:
            await self.refresh()

    def _rebuild(self) -> None:
        self.catalog = build_catalog((s.uri, s.info, s.first_seen) for s in self._servers.values() if s.info is not None)

    # --- requests -----------------------------------------------------------------------------------

    async def synthesize(
        self, model: TtsModel, text: str, voice: str | None, speaker: str | None
    ) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """(format, PCM) pieces as the server sends them; the first piece may be empty (its format)."""
        uri = model.server
        async with _connection(uri, self.timeouts) as client:
            if model.select_program:
                await client.write_event(SelectProgram(name=model.program).event())
            synth_voice = SynthesizeVoice(name=voice, speaker=speaker) if voice else None
            await client.write_event(Synthesize(text=text, voice=synth_voice).event())
            fmt: PcmFormat | None = None
            while True:
                event = await _read(client, uri, "the end of the audio")
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
                elif AudioStop.is_type(event.type):
                    if fmt is None:
                        raise WyomingFailed(f"Wyoming server {uri} ended the speech without sending audio")
                    return

    async def transcribe(
        self,
        model: AsrModel,
        pcm: bytes,
        *,
        language: str | None,
        context: dict[str, Any] | None,
    ) -> AsyncIterator[TranscriptChunk | Transcript]:
        """Transcript chunks as the server streams them, then the final Transcript."""
        uri = model.server
        async with _connection(uri, self.timeouts) as client:
            if model.select_program:
                await client.write_event(SelectProgram(name=model.program).event())
            await client.write_event(Transcribe(name=model.model_name, language=language, context=context).event())
            await client.write_event(AudioStart(rate=ASR_RATE, width=2, channels=1, timestamp=0).event())
            for offset in range(0, len(pcm), ASR_CHUNK_BYTES):
                await client.write_event(
                    AudioChunk(
                        rate=ASR_RATE, width=2, channels=1, audio=pcm[offset : offset + ASR_CHUNK_BYTES],
                        timestamp=offset * 1000 // (ASR_RATE * 2),
                    ).event()
                )  # fmt: skip
            await client.write_event(AudioStop(timestamp=len(pcm) * 1000 // (ASR_RATE * 2)).event())
            while True:
                event = await _read(client, uri, "a transcript")
                if TranscriptChunk.is_type(event.type):
                    yield TranscriptChunk.from_event(event)
                elif Transcript.is_type(event.type):
                    yield Transcript.from_event(event)
                    return
                elif TranscriptStart.is_type(event.type) or TranscriptStop.is_type(event.type):
                    continue


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
