"""The aiohttp application: OpenAI's audio and models routes, each a thin layer over the Wyoming pool.

A streamed response is prepared only when its first bytes are ready, so every failure before audio
or text exists still gets a proper status and OpenAI's error JSON. After that, an SSE stream ends
with an ``error`` event, and a raw audio stream is cut off (the client sees a truncated chunked
body, never a silently short file).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from wyoming.asr import Transcript, TranscriptChunk

from ..audio import AudioDecodeError, AudioTooLongError, PcmFormat, decode_file
from ..speech_text import clean_text, speakable
from . import auth, cors, multipart
from .catalog import AsrModel, TtsModel
from .config import ApiSettings
from .encoders import CONTENT_TYPES, MAX_SPEED, MIN_SPEED, SPEECH_FORMATS, SpeechPipeline
from .errors import ApiError, invalid, not_found
from .formats import STREAMABLE_FORMATS, TRANSCRIPTION_FORMATS, TranscriptionResult, render, sse
from .models import model_object, resolve_model, resolve_voice, voice_object
from .wyoming_pool import ASR_RATE, Timeouts, WyomingPool

_LOGGER = logging.getLogger(__name__)

POOL: web.AppKey[WyomingPool] = web.AppKey("pool", WyomingPool)
SETTINGS: web.AppKey[ApiSettings] = web.AppKey("settings", ApiSettings)

MULTIPART_FIELD_LIMIT = 64 * 1024  # a text field (prompt, language, …) longer than this is not a mistake we serve
SPEECH_DONE_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}  # Wyoming counts no tokens


# --- middleware: every failure in OpenAI's error shape --------------------------------------------


def _http_error(request: web.Request, err: web.HTTPException, settings: ApiSettings) -> ApiError:
    if err.status == 404:
        return ApiError(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    if err.status == 405:
        return ApiError(405, f"{request.method} is not allowed on {request.path}.", code="method_not_allowed")
    if err.status == 413:
        return _too_large(settings)
    return ApiError(err.status, err.reason or "Request failed.", code=None)


@web.middleware
async def _errors(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    try:
        return await handler(request)
    except ApiError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return err.response(headers)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _http_error(request, err, settings).response()
    except (ConnectionError, asyncio.CancelledError):
        raise  # the client went away: nobody to answer
    except Exception:
        _LOGGER.exception("Unexpected failure in %s %s", request.method, request.path)
        return ApiError(500, "The server failed unexpectedly; its log has the details.", type="server_error").response()


# --- request parsing ------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise invalid("The request body must be JSON (Content-Type: application/json).", code="invalid_content_type")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    return body


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    if not isinstance(value, str):
        raise invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        raise invalid(f"Invalid value for '{name}': {value!r}. Supported values are: {', '.join(choices)}.", name)
    return value


def _speed(value: Any) -> float:
    if value is None:
        return 1.0
    try:
        if isinstance(value, bool):
            raise TypeError
        speed = float(value)
    except (TypeError, ValueError):
        raise invalid("Invalid type for 'speed': expected a number.", "speed", "invalid_type") from None
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise invalid(f"Invalid value for 'speed': {value}. It must be between {MIN_SPEED} and {MAX_SPEED}.", "speed")
    return speed


def _spoken_input(text: str, settings: ApiSettings) -> str:
    """With --clean-text, the words of ``text`` (chat answers come with markdown and emoji)."""
    if not settings.clean_text:
        return text
    cleaned = clean_text(text)
    if not speakable(cleaned):
        raise invalid(
            "'input' has nothing to speak once markdown, links and emoji are removed.", "input", "empty_input"
        )
    return cleaned


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


# --- routes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpeechRequest:
    model: str
    text: str
    voice: Any  # a name, ``name:speaker`` or ``{"id": …}``: resolved against the model
    response_format: str
    stream_format: str
    speed: float


def _speech_request(body: dict[str, Any], settings: ApiSettings) -> _SpeechRequest:
    """The JSON body's fields, checked in the order OpenAI reports them."""
    model_id = _required_str(body, "model")
    text = _required_str(body, "input")
    if not text.strip():
        raise invalid("'input' is empty: give the text to speak.", "input", "empty_input")
    if len(text) > settings.max_input_chars:
        raise invalid(
            f"'input' is {len(text)} characters long; at most {settings.max_input_chars} are accepted.",
            "input",
            "string_above_max_length",
        )
    if "voice" not in body:
        raise invalid("Missing required parameter: 'voice'.", "voice", "missing_required_parameter")
    return _SpeechRequest(
        model=model_id,
        text=_spoken_input(text, settings),
        voice=body.get("voice"),
        response_format=_choice(body.get("response_format"), "response_format", SPEECH_FORMATS, "mp3"),
        stream_format=_choice(body.get("stream_format"), "stream_format", ("audio", "sse"), "audio"),
        speed=_speed(body.get("speed")),
    )


class _SpeechResponse:
    """The answer to a speech request, raw audio or SSE audio deltas, prepared at its first bytes."""

    def __init__(self, request: web.Request, asked: _SpeechRequest) -> None:
        self.request = request
        self.sse = asked.stream_format == "sse"
        content_type = "text/event-stream" if self.sse else CONTENT_TYPES[asked.response_format]
        self.response = web.StreamResponse(headers={"Content-Type": content_type})
        if self.sse:
            self.response.headers["Cache-Control"] = "no-cache"

    async def send(self, data: bytes) -> None:
        if not data:
            return
        if not self.response.prepared:
            await self.response.prepare(self.request)
        if self.sse:
            await self.response.write(sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}))
        else:
            await self.response.write(data)

    async def finish(self) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)  # no bytes at all (empty pcm): still a valid, empty answer
        if self.sse:
            await self.response.write(sse({"type": "speech.audio.done", "usage": SPEECH_DONE_USAGE}))
        await self.response.write_eof()

    async def fail(self, err: ApiError) -> None:
        """After the first bytes: an SSE stream ends with the error, raw audio is cut off."""
        _LOGGER.warning("Speech failed after the response started: %s", err.message)
        if self.sse:
            await self.response.write(sse(err.body()))
            await self.response.write_eof()
        else:
            _abort(self.request)


async def _encode_speech(
    audio: AsyncIterator[tuple[PcmFormat, bytes]], pipeline: SpeechPipeline, answer: _SpeechResponse
) -> None:
    """The Wyoming server's PCM through the pipeline to the client, as it arrives."""
    async with contextlib.aclosing(audio):
        async for fmt, pcm in audio:
            pipeline.start(fmt)
            if pcm:
                await answer.send(await pipeline.push(pcm))
    if not pipeline.started:
        raise ApiError(502, "The Wyoming server sent no audio.", type="server_error", code="wyoming_error")
    await answer.send(await pipeline.finish())


async def speech(request: web.Request) -> web.StreamResponse:
    pool, settings = request.app[POOL], request.app[SETTINGS]
    asked = _speech_request(await _json_body(request), settings)
    model = await resolve_model(pool, asked.model, "tts")
    assert isinstance(model, TtsModel)
    voice, speaker = resolve_voice(model, asked.voice)

    pipeline = SpeechPipeline(asked.response_format, asked.speed)
    answer = _SpeechResponse(request, asked)
    audio = pool.synthesize(model, asked.text, voice.name if voice else None, speaker)
    try:
        await _encode_speech(audio, pipeline, answer)
    except ConnectionResetError:
        _LOGGER.debug("The client left before the speech ended")  # the Wyoming connection is closed already
        return answer.response
    except ApiError as err:
        if not answer.response.prepared:
            raise
        await answer.fail(err)
        return answer.response
    finally:
        pipeline.close()
    await answer.finish()
    return answer.response


def _abort(request: web.Request) -> None:
    # Closing without the final chunk tells HTTP clients the body is incomplete.
    if request.transport is not None:
        request.transport.close()


def _too_large(settings: ApiSettings) -> ApiError:
    return ApiError(
        413, f"The request body is larger than the {settings.max_upload_mb:g} MB limit.", code="request_too_large"
    )


async def _read_form(request: web.Request, settings: ApiSettings) -> tuple[dict[str, list[str]], bytes | None]:
    """Multipart fields (repeatable, as ``include[]``) and the ``file`` part, read within the upload limit."""
    if not request.content_type.startswith("multipart/form-data"):
        raise invalid("Send the audio as multipart/form-data with a 'file' part.", None, "invalid_content_type")
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise _too_large(settings)
    body = await request.read()  # aiohttp stops at client_max_size (the upload limit): a 413 from the middleware
    try:
        parts = multipart.parse(body, request.headers.get("Content-Type", ""))
    except multipart.MultipartError as err:
        raise invalid(f"The multipart body cannot be read: {err}.", None, "invalid_multipart") from None
    fields: dict[str, list[str]] = {}
    upload: bytes | None = None
    for part in parts:
        if part.name == "file":
            upload = part.data
        elif len(part.data) > MULTIPART_FIELD_LIMIT:
            raise invalid(f"The form field '{part.name}' is too long.", part.name, "field_too_long")
        else:
            fields.setdefault(part.name.removesuffix("[]"), []).append(part.data.decode("utf-8", "replace"))
    return fields, upload


def _field(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


@dataclass(frozen=True)
class _TranscriptionRequest:
    model: str
    response_format: str
    stream: bool
    language: str | None
    prompt: str | None


def _transcription_request(fields: dict[str, list[str]]) -> _TranscriptionRequest:
    """The form's fields, checked; what Wyoming cannot honour is refused rather than ignored."""
    model_id = _field(fields, "model")
    if not model_id:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    response_format = _choice(_field(fields, "response_format"), "response_format", TRANSCRIPTION_FORMATS, "json")
    stream = _true(_field(fields, "stream"))
    if stream and response_format not in STREAMABLE_FORMATS:
        raise invalid(
            f"Streaming is available with response_format json or text, not {response_format}.",
            "stream",
            "unsupported_value",
        )
    if "word" in fields.get("timestamp_granularities", []):
        raise invalid(
            "Word timestamps are not available: Wyoming speech-to-text servers report no timings.",
            "timestamp_granularities",
            "unsupported_value",
        )
    if "logprobs" in fields.get("include", []):
        raise invalid(
            "Log probabilities are not available from Wyoming speech-to-text servers.", "include", "unsupported_value"
        )
    temperature = _field(fields, "temperature")
    if temperature:
        try:
            if not 0 <= float(temperature) <= 1:
                raise ValueError
        except ValueError:
            raise invalid("Invalid value for 'temperature': expected a number from 0 to 1.", "temperature") from None
    return _TranscriptionRequest(
        model=model_id,
        response_format=response_format,
        stream=stream,
        language=(_field(fields, "language") or "").strip() or None,
        prompt=(_field(fields, "prompt") or "").strip() or None,
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


async def _decode_upload(upload: bytes, settings: ApiSettings) -> bytes:
    """The uploaded file as Wyoming's PCM; what cannot be decoded is the client's error, with its reason."""
    try:
        return await decode_file(upload, ASR_RATE, max_seconds=settings.max_audio_seconds)
    except AudioTooLongError as err:
        raise invalid(_sentence(str(err)), "file", "audio_too_long") from None
    except AudioDecodeError as err:
        raise invalid(
            f"{_sentence(str(err))} Supported: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm.",
            "file",
            "invalid_audio",
        ) from None


async def _whole_transcript(
    events: AsyncIterator[Transcript | TranscriptChunk], asked: _TranscriptionRequest, duration: float
) -> web.Response:
    """The final transcript in the asked format; chunks streamed before it are not needed."""
    final: Transcript | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Transcript):
                final = event
    assert final is not None
    result = TranscriptionResult(final.text, duration, final.language or asked.language)
    body, content_type = render(result, asked.response_format)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")


async def _streamed_transcript(
    request: web.Request, events: AsyncIterator[Transcript | TranscriptChunk]
) -> web.StreamResponse:
    """OpenAI's SSE events: a delta per chunk (or the whole text as one), then the done event."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

    async def send(event: dict[str, Any]) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(sse(event))

    streamed = False
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TranscriptChunk):
                    if event.text:
                        streamed = True
                        await send({"type": "transcript.text.delta", "delta": event.text})
                elif isinstance(event, Transcript):
                    if not streamed and event.text:
                        await send({"type": "transcript.text.delta", "delta": event.text})
                    await send({"type": "transcript.text.done", "text": event.text})
    except ConnectionResetError:
        _LOGGER.debug("The client left before the transcript ended")
        return response
    except ApiError as err:
        if not response.prepared:
            raise
        _LOGGER.warning("Transcription failed after the response started: %s", err.message)
        await response.write(sse(err.body()))
    await response.write_eof()
    return response


async def transcriptions(request: web.Request) -> web.StreamResponse:
    pool, settings = request.app[POOL], request.app[SETTINGS]
    fields, upload = await _read_form(request, settings)
    if upload is None:
        raise invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    asked = _transcription_request(fields)
    model = await resolve_model(pool, asked.model, "asr")
    assert isinstance(model, AsrModel)

    pcm = await _decode_upload(upload, settings)
    duration = len(pcm) / (ASR_RATE * 2)
    # Wyoming has no prompt field; its free-form context is where a server can find one.
    context = {"prompt": asked.prompt} if asked.prompt else None
    events = pool.transcribe(model, pcm, language=asked.language, context=context)
    if asked.stream:
        return await _streamed_transcript(request, events)
    return await _whole_transcript(events, asked, duration)


async def translations(request: web.Request) -> web.StreamResponse:
    raise invalid(
        "Translation is not available: Wyoming speech-to-text servers transcribe in the spoken language and "
        "have no translate task. Use /v1/audio/transcriptions.",
        "model",
        "unsupported_operation",
    )


async def list_models(request: web.Request) -> web.Response:
    catalog = request.app[POOL].catalog
    return web.json_response({"object": "list", "data": [model_object(m) for m in catalog.models()]})


async def get_model(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    model_id = request.match_info["model"]
    model = pool.catalog.get(model_id)
    if model is None:
        await pool.refresh_if_stale()
        model = pool.catalog.get(model_id)
    if model is None:
        raise not_found(f"The model '{model_id}' does not exist.", "model")
    return web.json_response(model_object(model))


async def list_voices(request: web.Request) -> web.Response:
    catalog = request.app[POOL].catalog
    model_id = request.query.get("model")
    if model_id:
        model = await resolve_model(request.app[POOL], model_id, "tts")
        assert isinstance(model, TtsModel)
        models = [model]
    else:
        models = list(catalog.tts.values())
    data = [voice_object(model, voice) for model in models for voice in model.voices.values()]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    servers = pool.servers
    return web.json_response(
        {"status": "ok", "servers": len(servers), "reachable": sum(1 for s in servers if s.error is None and s.info)}
    )


# --- assembly -------------------------------------------------------------------------------------


def create_app(settings: ApiSettings, pool: WyomingPool | None = None) -> web.Application:
    middlewares = []
    if settings.cors_origins:
        middlewares.append(cors.middleware(settings.cors_origins))
    middlewares.append(_errors)
    middlewares.append(auth.middleware(auth.KeyChecker(settings.api_keys)))
    # Speech bodies are small JSON; the upload limit bounds the multipart reader and aiohttp's own reads.
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_upload_bytes)
    app[SETTINGS] = settings
    app[POOL] = pool or WyomingPool(
        settings.wyoming_uris,
        Timeouts(connect=settings.connect_timeout, read=settings.read_timeout),
        refresh_interval=settings.refresh_interval,
    )
    if settings.cors_origins:
        app.on_response_prepare.append(cors.on_prepare)

    async def lifecycle(app: web.Application) -> Any:
        await app[POOL].start()
        discovery = None
        if settings.zeroconf:
            from .discovery import ZeroconfDiscovery  # the zeroconf package is an optional extra

            discovery = ZeroconfDiscovery(app[POOL])
            await discovery.start()
        yield
        if discovery is not None:
            await discovery.stop()
        await app[POOL].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", translations)
    app.router.add_get("/v1/audio/voices", list_voices)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)  # ids such as org/model-name
    app.router.add_get("/health", health)
    return app
