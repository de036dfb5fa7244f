"""A second upstream per direction, and a circuit breaker in front of each.

When the primary fails before anything reached the client — a refused or failed connection, a
time-out, a 5xx, a 429 — the same request goes to the fallback at once, with the fallback's model
(and voice). After FAILURES_TO_OPEN failures in a row an upstream is skipped for a cool-down
(30 s, doubling up to 5 min) while a probe checks it in the background; when it answers, traffic
returns to it, and the next failure skips it again at once. Each switch is logged once.

The wrappers here stand where the handler expects a Transcriber and a Synthesizer, with or without
a fallback: every client request passes through them and is recorded once (monitor.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp

from .audio import AudioDecodeError, PcmFormat
from .backends import detect_backend, discover_voices, known_backend
from .catalog import Voice
from .monitor import Monitor, RequestRecord
from .realtime import RealtimeTranscriber, RealtimeTranscription
from .settings import Backend, Settings
from .stt import Transcriber, Utterance
from .tts import Synthesizer
from .upstream import Upstream, UpstreamError, upstream_from_settings

_LOGGER = logging.getLogger(__name__)

FAILURES_TO_OPEN = 3
FIRST_COOLDOWN = 30.0
LONGEST_COOLDOWN = 300.0
PROBE_TIMEOUT = 5.0

T = TypeVar("T")


def failure_kind(err: BaseException) -> str:
    """What went wrong, in one word for metrics and the request log."""
    status = getattr(err, "status", None)
    if status == 429:
        return "rate_limited"
    if status is not None:
        return "server_error" if status >= 500 else "rejected"
    if isinstance(err, AudioDecodeError):
        return "bad_reply"
    # upstream.py raises its UpstreamError while handling the transport's exception.
    cause = err.__cause__ or err.__context__
    if isinstance(cause, TimeoutError):  # aiohttp's time-outs are TimeoutErrors too
        return "timeout"
    if isinstance(cause, aiohttp.ClientConnectorError):
        return "unreachable"
    if isinstance(cause, aiohttp.ClientError):
        return "disconnected"
    return "bad_reply"


def requested_wait(err: BaseException) -> float | None:
    """The seconds a 429 asked us to wait (its Retry-After, as upstream.py read it)."""
    return err.retry_after if isinstance(err, UpstreamError) and err.status == 429 else None


def worth_falling_back(kind: str) -> bool:
    """Everything but a refusal of this very request (400, 401, 404…): that the fallback would not
    fix, and answering it from elsewhere would hide a mistake the user has to correct."""
    return kind != "rejected"


# --- the breaker -------------------------------------------------------------------------------


class Breaker:
    """One upstream's failures in a row; open (skipped) for a cool-down after FAILURES_TO_OPEN."""

    def __init__(self, label: str, upstream: Upstream) -> None:
        self.label = label  # "TTS primary http://…", for the log
        self.upstream = upstream
        self.failures = 0  # in a row
        self.last_failure: str | None = None
        self.open_until: float | None = None  # loop time
        self.cooldown = FIRST_COOLDOWN
        self.on_trial = False  # back after a probe: the next failure opens it again at once
        self._prober: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def succeeded(self) -> None:
        if self.is_open:
            self._close("answered a request")
        self.failures = 0
        self.on_trial = False
        self.cooldown = FIRST_COOLDOWN

    def failed(self, message: str, hold: float | None = None) -> None:
        """``hold``: seconds the upstream asked us to stay away (a 429's Retry-After): skip it now."""
        self.failures += 1
        self.last_failure = message
        if self.is_open:
            return
        if hold is not None and hold > 0:
            self.cooldown = min(max(hold, FIRST_COOLDOWN), LONGEST_COOLDOWN)
            self._open()
        elif self.on_trial:
            self.cooldown = min(self.cooldown * 2, LONGEST_COOLDOWN)
            self._open()
        elif self.failures >= FAILURES_TO_OPEN:
            self._open()
        elif self.failures == 1:
            _LOGGER.warning("%s", message)  # the first of a run; the rest are in the request lines
        else:
            _LOGGER.debug("%s", message)

    def _open(self) -> None:
        self.on_trial = False
        self.open_until = asyncio.get_running_loop().time() + self.cooldown
        _LOGGER.warning(
            "%s failed %d time(s) in a row (last: %s); skipping it for %g s while a probe checks it",
            self.label, self.failures, self.last_failure, self.cooldown,
        )  # fmt: skip
        self._prober = asyncio.create_task(self._probe_until_back(), name=f"probe {self.label}")

    def _close(self, why: str) -> None:
        self.open_until = None
        self.failures = 0
        self.on_trial = True
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()
        _LOGGER.info("%s %s: traffic returns to it", self.label, why)

    async def _probe_until_back(self) -> None:
        loop = asyncio.get_running_loop()
        while self.open_until is not None:
            await asyncio.sleep(max(0.0, self.open_until - loop.time()))
            if await self.probe():
                self._close("answered the probe")
                return
            self.cooldown = min(self.cooldown * 2, LONGEST_COOLDOWN)
            self.open_until = loop.time() + self.cooldown
            _LOGGER.debug("%s still fails (%s); next probe in %g s", self.label, self.last_failure, self.cooldown)

    async def probe(self) -> bool:
        """A free request (the model list): any answer but a 5xx or a 429 means the server is back."""
        try:
            await self.upstream.get_json("/models", timeout=PROBE_TIMEOUT)
        except UpstreamError as err:
            if failure_kind(err) != "rejected":
                self.last_failure = str(err)
                return False
        return True

    def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()

    def until(self) -> float | None:
        """The wall-clock time the cool-down ends."""
        if self.open_until is None:
            return None
        return time.time() + self.open_until - asyncio.get_running_loop().time()


# --- one direction's upstreams -----------------------------------------------------------------


@dataclass(eq=False)
class Member:
    name: str  # "primary" or "fallback"
    upstream: Upstream
    breaker: Breaker
    configured_backend: Backend | None = None
    backend: Backend | None = None  # once detected

    def backend_name(self) -> str | None:
        known = self.backend or known_backend(self.configured_backend, self.upstream.base_url)
        detection = self.upstream.detection
        if known is None and detection is not None and detection.done() and not detection.exception():
            known = detection.result()
        return known.value if known else None


class Route:
    """The upstreams of one direction, in order of preference."""

    def __init__(self, direction: str, members: list[Member], monitor: Monitor) -> None:
        self.direction = direction
        self.members = members
        self.monitor = monitor

    @property
    def primary(self) -> Member:
        return self.members[0]

    def plan(self, avoid: set[Member]) -> list[Member]:
        """Those not skipped and not yet failed in this request; if none is left, all of them
        in order: asking an upstream that may be back beats answering nothing."""
        usable = [m for m in self.members if not m.breaker.is_open and m not in avoid]
        return usable or [m for m in self.members if m not in avoid] or list(self.members)

    def usable(self) -> bool:
        return any(not member.breaker.is_open for member in self.members)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for member in self.members:
            breaker = member.breaker
            if breaker.is_open:
                # Skipped only when there is somewhere else to go; alone, it is still asked.
                state = "skipped" if self.usable() else "failing"
            else:
                state = "failing" if breaker.failures else "ok"
            rows.append(
                {
                    "direction": self.direction,
                    "upstream": member.name,
                    "url": member.upstream.display_url,
                    "backend": member.backend_name(),
                    "state": state,
                    "until": breaker.until(),
                    "failures_in_a_row": breaker.failures,
                    "last_failure": breaker.last_failure,
                }
            )
        return rows

    async def close(self) -> None:
        for member in self.members:
            member.breaker.stop()
            await member.upstream.close()  # a shared one closes twice: harmless


@dataclass(eq=False)
class _Request:
    """One client request as it goes: what it used, when its first result came, how it ended."""

    route: Route
    model: str
    voice: str | None
    began: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    first: float | None = None
    amount: float = 0.0  # what the client asked for: seconds of audio, or characters
    tried: list[str] = field(default_factory=list)  # members asked, in order, once each
    used: list[str] = field(default_factory=list)  # members that answered
    failed: set[Member] = field(default_factory=set)  # members that failed it: later parts avoid them
    fell_back_after: str | None = None
    outcome: str | None = None
    calls: int = 0
    recorded: bool = False

    def record(self, outcome: str) -> None:
        if self.recorded:
            return
        self.recorded = True
        latency = None if self.first is None else self.first - self.began
        monitor = self.route.monitor
        if self.fell_back_after is not None:
            monitor.fallback_taken(self.route.direction, self.fell_back_after)
        monitor.request(
            RequestRecord(
                direction=self.route.direction,
                model=self.model,
                voice=self.voice,
                upstream="+".join(self.used) or (self.tried[-1] if self.tried else self.route.primary.name),
                outcome=self.outcome or outcome,
                latency=latency,
                total=time.monotonic() - self.began,
                amount=self.amount,
                time=self.wall,
                fell_back_after=self.fell_back_after,
            )
        )


def _outcome(err: BaseException | None) -> str:
    if err is None:
        return "ok"
    if isinstance(err, (GeneratorExit, asyncio.CancelledError)):
        return "cancelled"
    if isinstance(err, (UpstreamError, AudioDecodeError)):
        return failure_kind(err)
    return "error"


def _count_failure(request: _Request, member: Member, err: BaseException) -> str:
    kind = failure_kind(err)
    request.route.monitor.upstream_failed(request.route.direction, member.name, kind)
    if worth_falling_back(kind):
        member.breaker.failed(str(err), requested_wait(err))
        request.failed.add(member)
    else:
        member.breaker.succeeded()  # it answered: up, whatever it thought of the request
    return kind


async def _attempts(
    request: _Request,
    attempt: Callable[[Member], tuple[str, AsyncIterator[T]]],
    amount: float,
    first_counts: bool = True,
    final: Callable[[T], bool] | None = None,
) -> AsyncIterator[T]:
    """Items of ``attempt(member)`` from the first member that answers; another member is tried
    only while nothing has been yielded. ``final(item)``: the answer is complete with that item
    (a consumer may stop there, without asking for the end of the stream)."""
    route = request.route
    members = route.plan(request.failed)
    for index, member in enumerate(members):
        if index == 0 and member is not route.primary and route.primary not in request.failed:
            request.fell_back_after = request.fell_back_after or "skipped"
        if member.name not in request.tried:
            request.tried.append(member.name)
        model, items = attempt(member)
        started = answered = False
        try:
            async with aclosing(items):
                async for item in items:
                    if not started:
                        started = True
                        if first_counts and request.first is None:
                            request.first = time.monotonic()
                    if final is not None and not answered and final(item):
                        answered = True
                        _count_answer(request, member, model, amount)
                    yield item
        except (UpstreamError, AudioDecodeError) as err:
            kind = _count_failure(request, member, err)
            if started or not worth_falling_back(kind) or index == len(members) - 1:
                request.outcome = kind
                raise
            request.fell_back_after = request.fell_back_after or kind
            continue
        if not answered:
            _count_answer(request, member, model, amount)
        return


def _count_answer(request: _Request, member: Member, model: str, amount: float) -> None:
    member.breaker.succeeded()
    request.route.monitor.upstream_answered(request.route.direction, member.name, model, amount)
    if member.name not in request.used:
        request.used.append(member.name)


# --- speech to text ------------------------------------------------------------------------------


class FailoverTranscriber:
    """A Transcriber's interface over the primary and, if configured, the fallback."""

    def __init__(self, route: Route, workers: dict[str, Transcriber], fallback_model: str | None) -> None:
        self.route = route
        self.workers = workers
        self.fallback_model = fallback_model
        self._primary = workers["primary"]
        realtime = self._primary.realtime
        self._realtime = RecordedRealtime(realtime, route) if realtime is not None else None

    # What the handler and start-up use of a Transcriber: the primary's.
    @property
    def upstream(self) -> Upstream:
        return self._primary.upstream

    @property
    def backend(self) -> Backend | None:
        return self._primary.backend

    @backend.setter
    def backend(self, backend: Backend | None) -> None:
        self._primary.backend = self.route.primary.backend = backend

    @property
    def realtime(self) -> RecordedRealtime | None:
        # A live session: the audio flows to it as it is spoken, so there is no fallback; recorded.
        return self._realtime

    def is_realtime(self, model: str) -> bool:
        return self._primary.is_realtime(model)

    def _model(self, member: Member, model: str) -> str:
        return model if member.name == "primary" else self.fallback_model or model

    async def transcribe(self, utterance: Utterance, model: str, language: str | None) -> str:
        request = _Request(self.route, model, None, amount=utterance.seconds)

        def attempt(member: Member) -> tuple[str, AsyncIterator[str]]:
            member_model = self._model(member, model)
            request.model = member_model
            return member_model, _one(self.workers[member.name].transcribe(utterance, member_model, language))

        try:
            async with aclosing(_attempts(request, attempt, utterance.seconds)) as texts:
                async for text in texts:
                    result = text
        except BaseException as err:
            request.record(_outcome(err))
            raise
        request.record("ok")
        return result

    async def transcribe_stream(
        self, utterance: Utterance, model: str, language: str | None
    ) -> AsyncIterator[tuple[bool, str]]:
        request = _Request(self.route, model, None, amount=utterance.seconds)

        def attempt(member: Member) -> tuple[str, AsyncIterator[tuple[bool, str]]]:
            member_model = self._model(member, model)
            request.model = member_model
            return member_model, self.workers[member.name].transcribe_stream(utterance, member_model, language)

        results = _attempts(request, attempt, utterance.seconds, first_counts=False, final=lambda item: item[0])
        try:
            async with aclosing(results):
                async for done, text in results:
                    if done:  # the handler stops reading here
                        request.first = time.monotonic()
                        request.record("ok")
                    yield done, text
        except BaseException as err:
            request.record(_outcome(err))
            raise
        request.record("bad_reply")  # unless recorded at its final text: a stream that never gave one

    async def discover(self) -> None:
        """The fallback's backend, detected like the primary's."""
        for member in self.route.members[1:]:
            member.backend = await detect_backend(member.upstream, None)
            self.workers[member.name].backend = member.backend
            _LOGGER.info("STT fallback %s: %s", member.upstream.display_url, member.backend.value)

    async def close(self) -> None:
        await self.route.close()


async def _one(awaitable) -> AsyncIterator[Any]:
    yield await awaitable


class RecordedRealtime:
    """The primary's Realtime transcriber, each session recorded like any other request."""

    def __init__(self, realtime: RealtimeTranscriber, route: Route) -> None:
        self.realtime = realtime
        self.route = route

    async def open(self, model: str, language: str | None) -> RecordedTranscription:
        request = _Request(self.route, model, None, tried=["primary"])
        member = self.route.primary
        try:
            session = await self.realtime.open(model, language)
        except (UpstreamError, AudioDecodeError) as err:
            _count_failure(request, member, err)
            request.record(_outcome(err))
            raise
        return RecordedTranscription(session, request, member)


class RecordedTranscription:
    def __init__(self, session: RealtimeTranscription, request: _Request, member: Member) -> None:
        self.session = session
        self.request = request
        self.member = member
        self.seconds = 0.0  # of audio sent

    async def send_audio(self, pcm: bytes, fmt: PcmFormat) -> None:
        self.seconds += len(pcm) / fmt.bytes_per_second
        await self.session.send_audio(pcm, fmt)

    async def finish(self) -> AsyncIterator[tuple[bool, str]]:
        request = self.request
        request.began = time.monotonic()  # as for other transcriptions: from the end of speech
        try:
            async with aclosing(self.session.finish()) as results:
                async for done, text in results:
                    if done:  # the handler stops reading here
                        request.first = time.monotonic()
                        request.amount = self.seconds
                        _count_answer(request, self.member, request.model, self.seconds)
                        request.record("ok")
                    yield done, text
        except (UpstreamError, AudioDecodeError) as err:
            _count_failure(request, self.member, err)
            request.amount = self.seconds
            request.record(_outcome(err))
            raise

    async def close(self) -> None:
        await self.session.close()
        if not self.request.recorded:  # the client left, or the handler gave up on it
            self.request.amount = self.seconds
            self.request.record("cancelled")


# --- text to speech ------------------------------------------------------------------------------


class FailoverSynthesizer:
    """A Synthesizer's interface over the primary and, if configured, the fallback."""

    def __init__(
        self, route: Route, workers: dict[str, Synthesizer], fallback_model: str | None, fallback_voice: str | None
    ) -> None:
        self.route = route
        self.workers = workers
        self.fallback_model = fallback_model
        self.fallback_voice = fallback_voice
        self.fallback_voices: dict[str, str | None] = {}  # discovered: voice -> its model, if it has one
        self._primary = workers["primary"]

    @property
    def upstream(self) -> Upstream:  # the primary's, as start-up's discovery reads it
        return self._primary.upstream

    def speakable(self, text: str, voice: Voice, language: str | None = None) -> str:
        return self._primary.speakable(text, voice, language)  # the same clean-up whichever server speaks

    def session(self) -> SpeechSession:
        """For one client request of several syntheses (streamed speech, sentence by sentence)."""
        return SpeechSession(self)

    async def synthesize(self, text: str, voice: Voice) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """One client request: (format, PCM) pieces, from the fallback if the primary fails first."""
        session = self.session()
        try:
            async with aclosing(session.synthesize(text, voice)) as pieces:
                async for piece in pieces:
                    yield piece
        except BaseException as err:
            session.finish(err)
            raise
        session.finish(None)

    def voice_for(self, member: Member, voice: Voice) -> Voice:
        if member.name == "primary":
            return voice
        known = self.fallback_voices
        if self.fallback_voice:
            name = self.fallback_voice
        elif voice.name in known or not known:
            name = voice.name
        else:
            name = next(iter(known))
        model = self.fallback_model or known.get(name) or voice.model
        # A preset keeps its speed and instructions; the voice and model are the fallback's.
        return dataclasses.replace(voice, name=name, model=model, description=name, upstream_voice=None)

    async def discover(self) -> None:
        """The fallback's backend and voices, found like the primary's."""
        for member in self.route.members[1:]:
            member.backend = await detect_backend(member.upstream, None)
            worker = self.workers[member.name]
            voices = ""
            if not self.fallback_voice:
                try:
                    found = await discover_voices(member.upstream, member.backend, worker.settings.tts_models)
                except UpstreamError as err:
                    _LOGGER.warning("TTS fallback voice discovery failed (%s); set --tts-fallback-voice", err)
                else:
                    self.fallback_voices = dict(found)
                    voices = f"; voices: {', '.join(self.fallback_voices)}"
            _LOGGER.info("TTS fallback %s: %s%s", member.upstream.display_url, member.backend.value, voices)

    async def close(self) -> None:
        await self.route.close()


class SpeechSession:
    """The syntheses of one client request: once one went to the fallback, the rest follow it
    (the voice changes once, not back and forth), and the request is recorded once."""

    def __init__(self, owner: FailoverSynthesizer) -> None:
        self.owner = owner
        self.request: _Request | None = None

    def speak(self, text: str, voice: Voice) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        """Text already made speakable (a streamed sentence, cleaned as it was cut)."""
        return self.synthesize(text, voice, written=False)

    async def synthesize(self, text: str, voice: Voice, written: bool = True) -> AsyncIterator[tuple[PcmFormat, bytes]]:
        owner = self.owner
        if self.request is None:
            self.request = _Request(owner.route, voice.model, voice.name)
        request = self.request
        first_counts = request.calls == 0  # a stream's first audio is its first sentence's
        request.calls += 1
        request.amount += len(text)

        def attempt(member: Member) -> tuple[str, AsyncIterator[tuple[PcmFormat, bytes]]]:
            target = owner.voice_for(member, voice)
            if member.name != "primary":
                request.model, request.voice = target.model, target.name
            worker = owner.workers[member.name]
            return target.model, (worker.synthesize if written else worker.speak)(text, target)

        async with aclosing(_attempts(request, attempt, len(text), first_counts)) as pieces:
            async for piece in pieces:
                yield piece

    def finish(self, error: BaseException | None) -> None:
        if self.request is not None:
            self.request.record(_outcome(error))

    def finished(self, player: asyncio.Future) -> None:
        """As a done-callback of the task that played the stream."""
        if player.cancelled():
            self.finish(asyncio.CancelledError())
        else:
            self.finish(player.exception())


# --- building ------------------------------------------------------------------------------------


def _fallback_upstreams(settings: Settings) -> dict[str, Upstream]:
    stt = (settings.stt_fallback_url, settings.stt_fallback_key) if settings.stt_models else (None, None)
    tts = (settings.tts_fallback_url, settings.tts_fallback_key) if settings.tts_models else (None, None)
    if stt[0] and stt == tts:  # one server for both: one pool
        shared = upstream_from_settings(settings, "STT/TTS fallback", *stt)
        return {"stt": shared, "tts": shared}
    made = {}
    for direction, (url, key) in (("stt", stt), ("tts", tts)):
        if url:
            made[direction] = upstream_from_settings(settings, f"{direction.upper()} fallback", url, key)
    return made


def _members(direction: str, primary: Upstream, configured: Backend | None, fallback: Upstream | None) -> list[Member]:
    label = direction.upper()
    members = [Member("primary", primary, Breaker(f"{label} primary {primary.display_url}", primary), configured)]
    if fallback is not None:
        members.append(Member("fallback", fallback, Breaker(f"{label} fallback {fallback.display_url}", fallback)))
    return members


def wrap(
    settings: Settings, transcriber: Transcriber | None, synthesizer: Synthesizer | None, monitor: Monitor
) -> tuple[FailoverTranscriber | None, FailoverSynthesizer | None]:
    """The primaries' Transcriber and Synthesizer behind failover, with the fallbacks the settings
    name. Must run inside the event loop (the fallbacks' HTTP pools belong to it)."""
    fallbacks = _fallback_upstreams(settings)
    stt = tts = None
    if transcriber is not None:
        members = _members("stt", transcriber.upstream, settings.stt_backend, fallbacks.get("stt"))
        workers = {"primary": transcriber}
        if len(members) > 1:
            # The primary's extra fields and Realtime models are its own; the fallback is asked plainly.
            fallback_settings = replace(settings, stt_backend=None, stt_realtime_models=[], stt_extra_body={})
            workers["fallback"] = Transcriber(fallback_settings, members[1].upstream)
        stt = FailoverTranscriber(Route("stt", members, monitor), workers, settings.stt_fallback_model)
    if synthesizer is not None:
        members = _members("tts", synthesizer.upstream, settings.tts_backend, fallbacks.get("tts"))
        workers = {"primary": synthesizer}
        if len(members) > 1:
            models = [settings.tts_fallback_model] if settings.tts_fallback_model else settings.tts_models
            fallback_settings = replace(
                settings, tts_backend=None, tts_realtime_models=[], tts_extra_body={}, tts_models=models
            )
            workers["fallback"] = Synthesizer(fallback_settings, members[1].upstream)
        tts = FailoverSynthesizer(
            Route("tts", members, monitor), workers, settings.tts_fallback_model, settings.tts_fallback_voice
        )
    return stt, tts
