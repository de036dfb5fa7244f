"""A real HTTP server standing in for an OpenAI-compatible speech API.

Every request is checked against rules written from the OpenAI audio API spec
(`../shared/reference/openai-audio-openapi.yaml`; `test_upstream_rules.py` checks that these rules
still say what the spec says). A request that breaks a rule gets a 400 and is recorded in
``violations``, which the tests' fixture asserts empty. Faults are switched on per test.

``use(name)`` switches to a backend profile: what one real server does differently, written from
its documentation and its users' reports (see PROFILES and docs/servers.md).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import random
import wave
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from audio_samples import encode, shaped_wav, tone, wav

# --- rules from the spec (CreateSpeechRequest, CreateTranscriptionRequest) -----------------------
SPEECH_PROPERTIES = {"model", "input", "instructions", "voice", "response_format", "speed", "stream_format"}
SPEECH_REQUIRED = {"model", "input", "voice"}
SPEECH_FORMATS = {"mp3", "opus", "aac", "flac", "wav", "pcm"}
SPEECH_STREAM_FORMATS = {"sse", "audio"}
SPEECH_SPEED_RANGE = (0.25, 4.0)
SPEECH_TEXT_MAX = 4096
TRANSCRIPTION_PROPERTIES = {
    "file", "model", "language", "languages", "keywords", "prompt", "response_format", "temperature",
    "include", "timestamp_granularities", "stream", "chunking_strategy", "known_speaker_names",
    "known_speaker_references",
}  # fmt: skip
TRANSCRIPTION_REQUIRED = {"file", "model"}
TRANSCRIPTION_FORMATS = {"json", "text", "srt", "verbose_json", "vtt", "diarized_json"}
TRANSCRIPTION_FILE_TYPES = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"}
TRANSCRIPTION_ARRAYS = {
    "languages",
    "keywords",
    "include",
    "timestamp_granularities",
    "known_speaker_names",
    "known_speaker_references",
}
PCM_RATE = 24000  # OpenAI's raw pcm: 24 kHz, 16-bit, mono
SECONDS_PER_CHARACTER = 0.02


@dataclass
class Fault:
    """What to do instead of answering well."""

    status: int | None = None  # answer with this HTTP status and an OpenAI error body
    message: str = "simulated failure"
    retry_after: str | None = None
    times: int = 1_000_000  # how many requests are hit before answering well again
    silent: bool = False  # accept, then never answer
    drip_interval: float | None = None  # send the body one byte at a time
    truncate: bool = False  # promise more bytes than sent, then hang up
    body: bytes | None = None  # send these bytes as the 200 body (not audio)
    close_connection: bool = False  # hang up without answering
    raw: bytes | None = None  # write these bytes as the whole HTTP answer, then hang up
    drip_after: int = 0  # with drip_interval: send this many bytes at once first


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    file_name: str | None = None
    file_bytes: bytes | None = None


@dataclass(frozen=True)
class Profile:
    """How one real server answers, where it differs from the spec (facts from its docs and reports)."""

    backend: str = "OPENAI"  # the probe it answers: KOKORO_FASTAPI /v1/test, SPEACHES /health, LOCALAI /readyz
    checks_key: bool = True
    speech_formats: frozenset[str] = frozenset(SPEECH_FORMATS)  # others are refused, as refusal says
    refusal: str = "openai"  # openai: 400 error JSON naming the field; fastapi: 422 detail; openedai: 400 own JSON;
    # openedai-0.13: 500 without a word about the format
    refusal_message: str = "Invalid value for response_format"
    answers_with: str | None = None  # the format it sends whatever was asked
    streams_raw_pcm: bool = False  # raw 16-bit PCM labelled audio/pcm, whatever was asked
    wav_shape: str = "canonical"  # see audio_samples.shaped_wav
    speech_rate: int = PCM_RATE  # of its wav and pcm
    pcm_content_type: str = "audio/pcm"
    voices: str | None = None  # /v1/audio/voices: "names" {"voices": [...]}, "objects" (Speaches), None: 404
    models: str = "ids"  # /v1/models: "ids", "speaches" (entries with task and voices)
    model_voices: bool = False  # /v1/models/{id} lists its voices (Speaches)
    transcribes: bool = True
    transcript: str = "json"  # json, verbose (Groq), segments (LocalAI), text (any body that is not JSON)
    streams_transcripts: str = "openai"  # SSE: openai delta/done events, segments (Speaches), none (ignores stream)
    extra_fields: frozenset[str] = frozenset()


PROFILES: dict[str, Profile] = {
    "spec": Profile(),
    # OpenAI streams WAV with both sizes 0xFFFFFFFF (seen in hexdumps, speaches-ai/speaches#493).
    "openai": Profile(wav_shape="streamed"),
    # Groq's Orpheus: response_format must be wav ("response_format must be one of [wav]", a 400),
    # 24 kHz WAV; 429 with retry-after on its free tier; verbose JSON with x_groq; stream is ignored.
    "groq": Profile(
        speech_formats=frozenset({"wav"}),
        refusal_message="response_format must be one of [wav]",
        transcript="verbose",
        streams_transcripts="none",
    ),
    # Speaches: /health says OK, voices at /v1/audio/voices (objects) and per model, 422 for a bad
    # field (FastAPI), WAV streamed through soundfile with zero sizes (before it stopped streaming WAV),
    # one SSE data line of {"text"} per segment when stream=true, vad_filter as an extra field, no key.
    "speaches": Profile(
        backend="SPEACHES",
        checks_key=False,
        refusal="fastapi",
        wav_shape="zero-sizes",
        voices="objects",
        models="speaches",
        model_voices=True,
        streams_transcripts="segments",
        extra_fields=frozenset({"vad_filter"}),
    ),
    # Kokoro-FastAPI: /v1/test, voices as names, WAV from FFmpeg's muxer with 0xFFFFFFFF sizes and a
    # LIST chunk, and (before its fix, remsky/Kokoro-FastAPI#467) the size trailer; speech only.
    "kokoro-fastapi": Profile(
        backend="KOKORO_FASTAPI", checks_key=False, wav_shape="muxer-trailer", voices="names", transcribes=False
    ),
    # Kokoros: streams by default, and then sends raw PCM labelled audio/pcm whatever was asked;
    # voices as names; a static model list; speech only.
    "kokoros": Profile(checks_key=False, streams_raw_pcm=True, voices="names", transcribes=False),
    # Kokoros before streaming: a 32-bit float WAV even when asked for mp3 (lucasjinreal/Kokoros#63).
    "kokoros-2025": Profile(checks_key=False, answers_with="wav", wav_shape="float", voices="names", transcribes=False),
    # LocalAI: /readyz; ignores response_format and answers WAV (piper: 22050 Hz); no voice listing
    # (the model is the voice); transcripts with segments; stream is ignored; no key.
    "localai": Profile(
        backend="LOCALAI",
        checks_key=False,
        answers_with="wav",
        speech_rate=22050,
        transcript="segments",
        streams_transcripts="none",
    ),
    # openedai-speech (0.14 and later): all six formats, pcm labelled with piper's rate, a 400 with its
    # own JSON for anything else; speech only.
    "openedai-speech": Profile(
        checks_key=False,
        refusal="openedai",
        speech_rate=22050,
        pcm_content_type="audio/pcm;rate=22050",
        transcribes=False,
    ),
    # openedai-speech before 0.14 knew mp3, opus, aac and flac only: wav or pcm failed with a 500
    # whose body says nothing about the format.
    "openedai-speech-0.13": Profile(
        checks_key=False,
        speech_formats=frozenset({"mp3", "opus", "aac", "flac"}),
        refusal="openedai-0.13",
        transcribes=False,
    ),
}


class FakeUpstream:
    def __init__(self, *, key: str | None = None, backend: str = "OPENAI", voices: list[str] | None = None) -> None:
        self.key = key
        self.backend = backend
        self.voices = voices or ["af_heart", "am_adam"]
        self.requests: list[Recorded] = []
        self.record_bodies = True  # benchmarks turn this off: thousands of requests need not be kept
        self.violations: list[str] = []
        self.speech_faults: list[Fault] = []
        self.transcription_faults: list[Fault] = []
        self.allowed_extra_fields: set[str] = set()
        self.speech_override: tuple[str, bytes] | None = None  # (response kind, body) sent whatever was asked
        self.speech_bodies: list[bytes] = []  # bodies for the next requests in turn, whatever was asked
        self.delay_for_text: dict[str, float] = {}  # input containing the key answers that much later
        self.active_speech = 0
        self.cancelled = 0  # requests whose client hung up before the answer
        self.most_active_speech = 0
        self.chunk_bytes = 4096
        self.chunk_delay = 0.0
        self.answer_delay = 0.0
        self.answer_jitter = 0.0  # each answer's delay varies by up to this fraction either way (benchmarks)
        self.probe_delay = 0.0  # backend probes and voice listings answer this late
        self.probes_waiting = 0
        self.transcript: str | None = None
        self.streams_transcripts = True  # answer stream=true with server-sent events
        self.peers: set[tuple[str, int]] = set()  # client addresses seen: one per TCP connection
        self.unavailable = False  # answer everything 503, as a server being restarted or overloaded does
        self.model_listings = 0  # GET /v1/models: what the proxy probes a failing upstream with
        self.profile = PROFILES["spec"]
        self.listing_faults: list[Fault] = []  # for /v1/audio/voices and /v1/models
        self._runner: web.AppRunner | None = None
        self.port = 0

    def use(self, name: str) -> Profile:
        """Behave as the named real server from now on."""
        self.profile = profile = PROFILES[name]
        self.backend = profile.backend
        self.allowed_extra_fields = set(profile.extra_fields)
        if not profile.checks_key:
            self.key = None
        if profile.streams_transcripts == "none":
            self.streams_transcripts = False
        return profile

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: any free one); a given port brings a stopped stand-in back there."""

        @web.middleware
        async def note_peer(request: web.Request, handler):
            self.peers.add(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
            if request.path == "/v1/models":
                self.model_listings += 1
            if self.unavailable:
                if request.method == "POST":  # a request that reached the server, answered or not
                    self.requests.append(Recorded(request.path.removeprefix("/v1"), dict(request.headers)))
                return _error(503, "The server is overloaded or not ready yet.")
            return await handler(request)

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[note_peer])
        app.router.add_post("/v1/audio/speech", self._counting_cancellations(self._speech))
        app.router.add_post("/v1/audio/transcriptions", self._counting_cancellations(self._transcriptions))
        app.router.add_get("/v1/test", self._kokoro_test)
        app.router.add_get("/v1/audio/voices", self._audio_voices)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._speaches_health)
        app.router.add_get("/v1/models/{model:.+}", self._speaches_model)
        app.router.add_get("/readyz", self._localai_ready)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_stats", self._stats)  # for benchmarks in another process
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _counting_cancellations(self, handler):
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except asyncio.CancelledError:  # the proxy hung up on us
                self.cancelled += 1
                raise

        return handle

    # --- checks -------------------------------------------------------------------------------

    def _violation(self, text: str) -> web.Response:
        self.violations.append(text)
        return _error(400, text)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided")
        return None

    def _take_fault(self, faults: list[Fault]) -> Fault | None:
        while faults and faults[0].times <= 0:
            faults.pop(0)
        if not faults:
            return None
        faults[0].times -= 1
        return faults[0]

    # --- speech ---------------------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        if request.content_type != "application/json":
            return self._violation(f"speech: content type {request.content_type}, expected application/json")
        try:
            body = await request.json()
        except ValueError:
            return self._violation("speech: body is not JSON")
        self.requests.append(
            Recorded("/audio/speech", dict(request.headers), json=body if self.record_bodies else None)
        )
        if problem := check_speech(body, self.allowed_extra_fields):
            return self._violation(problem)
        self.active_speech += 1
        self.most_active_speech = max(self.most_active_speech, self.active_speech)
        try:
            return await self._speak(request, body)
        finally:
            self.active_speech -= 1

    def _answer_delay(self) -> float:
        return self.answer_delay * (1 + random.uniform(-self.answer_jitter, self.answer_jitter))

    async def _speak(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        delay = self._answer_delay() + sum(d for key, d in self.delay_for_text.items() if key in body["input"])
        if delay:
            await asyncio.sleep(delay)
        fault = self._take_fault(self.speech_faults)
        if fault is not None and (early := await _fault_response(request, fault)) is not None:
            return early

        fmt = body.get("response_format", "mp3")
        if fmt not in self.profile.speech_formats:
            return _refusal(self.profile, fmt)
        content_type, content = self._speech_content(fmt, body["input"])
        if self.speech_override is not None:
            content = self.speech_override[1]
        if self.speech_bodies:
            content = self.speech_bodies.pop(0)
        if fault is not None and fault.body is not None:
            content = fault.body
        return await self._send_speech(request, fault, content_type, content)

    def _speech_content(self, fmt: str, text: str) -> tuple[str, bytes]:
        profile = self.profile
        seconds, amplitude = max(0.1, len(text) * SECONDS_PER_CHARACTER), amplitude_for(text)
        if profile.streams_raw_pcm:
            return "audio/pcm", tone(seconds, PCM_RATE, amplitude=amplitude)
        fmt = profile.answers_with or fmt
        if fmt == "wav" and (profile.wav_shape != "canonical" or profile.speech_rate != PCM_RATE):
            return "audio/wav", shaped_wav(
                tone(seconds, profile.speech_rate, amplitude=amplitude), profile.speech_rate, profile.wav_shape
            )
        if fmt == "pcm":
            return profile.pcm_content_type, tone(seconds, profile.speech_rate, amplitude=amplitude)
        return "application/octet-stream", speech_audio(fmt, seconds, amplitude)

    async def _send_speech(
        self, request: web.Request, fault: Fault | None, content_type: str, content: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        if fault is not None and fault.truncate:
            response.content_length = len(content) * 2
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        step = 1 if fault is not None and fault.drip_interval else self.chunk_bytes
        if fault is not None and fault.drip_after:
            await response.write(content[: fault.drip_after])
            content = content[fault.drip_after :]
        for start in range(0, len(content), step):
            await response.write(content[start : start + step])
            if fault is not None and fault.drip_interval:
                await asyncio.sleep(fault.drip_interval)
            elif self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if fault is not None and fault.truncate:
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write_eof()
        return response

    # --- transcriptions ---------------------------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        if request.content_type != "multipart/form-data":
            return self._violation(f"transcription: content type {request.content_type}, expected multipart/form-data")
        recorded, problem = await _read_form(request)
        if problem:
            return self._violation(problem)
        fields = recorded.fields
        self.requests.append(recorded)
        if problem := check_transcription(fields, recorded.file_name, recorded.file_bytes, self.allowed_extra_fields):
            return self._violation(problem)
        file_bytes = recorded.file_bytes or b""
        if not self.record_bodies:
            recorded.file_bytes = None
        if self.answer_delay:
            await asyncio.sleep(self._answer_delay())
        fault = self._take_fault(self.transcription_faults)
        if fault is not None and (early := await _fault_response(request, fault)) is not None:
            return early
        if fault is not None and fault.body is not None:
            return web.Response(body=fault.body, content_type="application/json")
        text = self.transcript if self.transcript is not None else describe_wav(file_bytes)
        if fields.get("stream") == "true" and self.streams_transcripts:
            if self.profile.streams_transcripts == "segments":
                return await _stream_segments(request, text)
            return await _stream_transcript(request, text)
        return _transcript_reply(self.profile, text, fields.get("response_format"))

    # --- backend probes and voice listings ---------------------------------------------------------

    async def _kokoro_test(self, request: web.Request) -> web.Response:
        await self._probe_pause()
        if self.backend != "KOKORO_FASTAPI":
            return _error(404, "Not Found")
        return web.json_response({"status": "ok"})

    async def _audio_voices(self, request: web.Request) -> web.StreamResponse:
        await self._probe_pause()
        fault = self._take_fault(self.listing_faults)
        if fault is not None and (early := await _fault_response(request, fault)) is not None:
            return early
        shape = self.profile.voices or ("names" if self.backend == "KOKORO_FASTAPI" else None)
        if shape is None:
            return _error(404, "Not Found")
        if shape == "objects" and isinstance(self.voices, list):
            voices = [{"name": v, "language": "en-us", "gender": "female", "id": v} for v in self.voices]
            return web.json_response({"voices": voices, "object": "list"})
        return web.json_response({"voices": self.voices})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._probe_pause()
        fault = self._take_fault(self.listing_faults)
        if fault is not None and (early := await _fault_response(request, fault)) is not None:
            return early
        if self.profile.models == "speaches":
            voices = [{"name": v, "language": "en-us", "gender": "female", "id": v} for v in self.voices]
            data = [
                {
                    "id": "speaches-ai/Kokoro-82M-v1.0-ONNX",
                    "object": "model",
                    "task": "text-to-speech",
                    "voices": voices,
                },
                {"id": "Systran/faster-whisper-small", "object": "model", "task": "automatic-speech-recognition"},
            ]
        else:
            data = [{"id": name, "object": "model", "owned_by": "stand-in"} for name in ("tts-1", "whisper-1")]
        return web.json_response({"object": "list", "data": data})

    async def _speaches_health(self, request: web.Request) -> web.Response:
        await self._probe_pause()
        if self.backend != "SPEACHES":
            return _error(404, "Not Found")
        return web.Response(text="OK")

    async def _speaches_model(self, request: web.Request) -> web.Response:
        await self._probe_pause()
        if self.backend != "SPEACHES" and not self.profile.model_voices:
            return _error(404, "Not Found")
        model = request.match_info["model"]
        return web.json_response(
            {"id": model, "object": "model", "voices": [{"name": f"{v}", "language": "en-us"} for v in self.voices]}
        )

    async def _probe_pause(self) -> None:
        self.probes_waiting += 1
        try:
            await asyncio.sleep(self.probe_delay)
        finally:
            self.probes_waiting -= 1

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        names = ["gpt-4o-mini-transcribe", "whisper-1", "gpt-4o-mini-tts", "tts-1"]
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"connections": len(self.peers), "requests": len(self.requests)})

    async def _localai_ready(self, request: web.Request) -> web.Response:
        await self._probe_pause()
        if self.backend != "LOCALAI":
            return _error(404, "Not Found")
        return web.Response(text="OK")


async def _stream_transcript(request: web.Request, text: str) -> web.StreamResponse:
    """TranscriptTextDeltaEvent per word, then TranscriptTextDoneEvent, as server-sent events."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    words = text.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        await response.write(f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n".encode())
    await response.write(f"data: {json.dumps({'type': 'transcript.text.done', 'text': text})}\n\n".encode())
    await response.write_eof()
    return response


async def _stream_segments(request: web.Request, text: str) -> web.StreamResponse:
    """Speaches' stream: one ``data: {"text": …}`` per segment (here: per sentence), no [DONE]."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for segment in (part for part in text.replace(". ", ".|").split("|") if part):
        await response.write(f"data: {json.dumps({'text': ' ' + segment})}\n\n".encode())
    await response.write_eof()
    return response


def _transcript_reply(profile: Profile, text: str, response_format: str | None) -> web.Response:
    if response_format == "text" or profile.transcript == "text":
        return web.Response(text=text)
    if profile.transcript == "verbose":
        segment = {"id": 0, "start": 0.0, "end": 1.0, "text": " " + text}
        reply = {
            "task": "transcribe",
            "language": "English",
            "duration": 1.0,
            "text": " " + text,
            "segments": [segment],
        }
        return web.json_response({**reply, "x_groq": {"id": "req_stand_in"}})
    if profile.transcript == "segments":
        return web.json_response({"segments": [{"id": 0, "start": 0, "end": 1, "text": text}], "text": text})
    return web.json_response({"text": text})


def _refusal(profile: Profile, fmt: str) -> web.Response:
    if profile.refusal == "fastapi":
        allowed = sorted(profile.speech_formats)
        listed = ", ".join(f"'{f}'" for f in allowed[:-1]) + f" or '{allowed[-1]}'"
        detail = [{"type": "literal_error", "loc": ["body", "response_format"], "msg": f"Input should be {listed}", "input": fmt}]  # fmt: skip
        return web.json_response({"detail": detail}, status=422)
    if profile.refusal == "openedai":
        body = {"message": f"Invalid response_format: '{fmt}'", "code": 400, "type": "BadRequestError", "param": "response_format"}  # fmt: skip
        return web.json_response(body, status=400)
    if profile.refusal == "openedai-0.13":
        return web.json_response({"message": "InternalServerError", "code": 500}, status=500)
    return _error(400, profile.refusal_message)


async def _read_form(request: web.Request) -> tuple[Recorded, str | None]:
    """The multipart fields as sent (``name[]`` fields gathered into lists), and a rule broken, if any."""
    fields: dict[str, Any] = {}
    recorded = Recorded("/audio/transcriptions", dict(request.headers), fields=fields)
    reader = await request.multipart()
    async for part in reader:
        name = part.name or ""
        if name == "file":
            recorded.file_name = part.filename
            recorded.file_bytes = bytes(await part.read())
            fields["file"] = True
        elif name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(await part.text())
        elif name in fields:
            return recorded, f"transcription: field {name} sent twice"
        else:
            fields[name] = await part.text()
    return recorded, None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


async def _fault_response(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    if fault.silent:
        await asyncio.sleep(3600)
    if fault.raw is not None:
        request.transport.write(fault.raw)  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
    if fault.close_connection:
        request.transport.close()  # type: ignore[union-attr]
        return web.Response(status=500)
    if fault.status is not None:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return _error(fault.status, fault.message, headers)
    return None


def check_speech(body: Any, extra: set[str]) -> str | None:
    if not isinstance(body, dict):
        return "speech: body is not a JSON object"
    if missing := SPEECH_REQUIRED - body.keys():
        return f"speech: missing {sorted(missing)}"
    if unknown := body.keys() - SPEECH_PROPERTIES - extra:
        return f"speech: unknown properties {sorted(unknown)}"
    if not isinstance(body["model"], str) or not isinstance(body["input"], str):
        return "speech: model and input must be strings"
    if len(body["input"]) > SPEECH_TEXT_MAX:
        return f"speech: input longer than {SPEECH_TEXT_MAX}"
    voice = body["voice"]
    if not (isinstance(voice, str) or (isinstance(voice, dict) and isinstance(voice.get("id"), str))):
        return "speech: voice must be a string or {id}"
    return _speech_options_problem(body)


def _speech_options_problem(body: dict[str, Any]) -> str | None:
    if "instructions" in body and (not isinstance(body["instructions"], str) or len(body["instructions"]) > 4096):
        return "speech: bad instructions"
    if body.get("response_format", "mp3") not in SPEECH_FORMATS:
        return f"speech: response_format {body.get('response_format')!r}"
    if body.get("stream_format", "audio") not in SPEECH_STREAM_FORMATS:
        return "speech: bad stream_format"
    if "speed" in body:
        speed = body["speed"]
        if isinstance(speed, bool) or not isinstance(speed, (int, float)):
            return "speech: speed is not a number"
        if not SPEECH_SPEED_RANGE[0] <= speed <= SPEECH_SPEED_RANGE[1]:
            return f"speech: speed {speed} out of range"
    return None


def check_transcription(
    fields: dict[str, Any], file_name: str | None, data: bytes | None, extra: set[str]
) -> str | None:
    if missing := TRANSCRIPTION_REQUIRED - fields.keys():
        return f"transcription: missing {sorted(missing)}"
    if unknown := fields.keys() - TRANSCRIPTION_PROPERTIES - extra:
        return f"transcription: unknown fields {sorted(unknown)}"
    if not file_name or file_name.rsplit(".", 1)[-1].lower() not in TRANSCRIPTION_FILE_TYPES:
        return f"transcription: file name {file_name!r} has no supported extension"
    for name in TRANSCRIPTION_ARRAYS & fields.keys():
        if not isinstance(fields[name], list):
            return f"transcription: {name} must be sent as an array ({name}[])"
    if fields.get("response_format", "json") not in TRANSCRIPTION_FORMATS:
        return f"transcription: response_format {fields.get('response_format')!r}"
    return _transcription_values_problem(fields) or (_wav_problem(data) if file_name.lower().endswith(".wav") else None)


def _transcription_values_problem(fields: dict[str, Any]) -> str | None:
    if "temperature" in fields:
        try:
            temperature = float(fields["temperature"])
        except ValueError:
            return "transcription: temperature is not a number"
        if not 0 <= temperature <= 1:
            return "transcription: temperature out of 0..1"
    if "stream" in fields and fields["stream"] not in ("true", "false"):
        return "transcription: stream must be true or false"
    return None


def _wav_problem(data: bytes | None) -> str | None:
    try:
        with wave.open(io.BytesIO(data or b"")) as w:
            frames = w.getnframes()
            if len(w.readframes(frames)) != frames * w.getsampwidth() * w.getnchannels():
                return "transcription: WAV shorter than its header says"
    except (wave.Error, EOFError) as err:
        return f"transcription: file is not a valid WAV ({err})"
    return None


def describe_wav(data: bytes) -> str:
    """The transcript the stand-in 'hears': what arrived, so tests can check it."""
    with wave.open(io.BytesIO(data)) as w:
        return f"{w.getnframes()} frames at {w.getframerate()} Hz, {w.getsampwidth() * 8}-bit, {w.getnchannels()} ch"


def amplitude_for(text: str) -> int:
    """Each text's speech is as loud as its word count says, so tests can tell sentences apart in the audio."""
    return 1000 * min(30, len(text.split()))


@functools.lru_cache(maxsize=64)
def speech_audio(fmt: str, seconds: float, amplitude: int = 8000) -> bytes:
    pcm = tone(seconds, PCM_RATE, amplitude=amplitude)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav(pcm, PCM_RATE)
    if fmt == "opus":
        return encode("opus", tone(seconds, 48000, amplitude=amplitude), 48000)
    return encode(fmt, pcm, PCM_RATE)
