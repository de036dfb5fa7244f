"""The proxy's options in one table (see options.py): command line, environment, YAML, validation.

Precedence, lowest first: built-in default < ``--config`` file < environment < command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol

from . import __version__, speech_text
from .options import (
    Option,
    OptionError,
    boolean,
    choice,
    json_object,
    lower_choice,
    number,
    optional,
    resolve,
    words,
    wyoming_uri,
)
from .options import build_parser as build_option_parser

OPENAI_URL = "https://api.openai.com/v1"
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
    "marin", "cedar",
)  # fmt: skip


class Backend(str, Enum):
    OPENAI = "OPENAI"
    SPEACHES = "SPEACHES"
    KOKORO_FASTAPI = "KOKORO_FASTAPI"
    LOCALAI = "LOCALAI"


class Secret:
    """A credential: its value never shows in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


SettingsError = OptionError  # a configuration value is wrong; the message names the flag and the env var


# --- value parsers: text (from env or flags) -> Python -------------------------------------------


def _voice_labels(value: Any) -> dict[str, str]:
    """``alloy=Alloy nova=Nova``, ``alloy=Warm voice, nova=Bright voice`` or a JSON/YAML mapping."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        raise vol.Invalid("expected voice=Label pairs")
    if value.strip().startswith("{"):
        return {str(k): str(v) for k, v in json_object(value).items()}
    parts = value.split(",") if "," in value else value.split()
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in parts)):
        voice, sep, label = part.partition("=")
        if not sep or not voice.strip() or not label.strip():
            raise vol.Invalid(f"expected voice=Label, got {part!r}")
        labels[voice.strip()] = label.strip()
    return labels


@dataclass(frozen=True)
class VoicePreset:
    """A named voice: an upstream voice with its own model, instructions, speed and languages."""

    name: str
    voice: str
    model: str | None = None
    instructions: str | None = None
    speed: float | None = None
    languages: tuple[str, ...] = ()
    label: str | None = None


_PRESET_TEXT = ("name", "voice", "model", "instructions", "label")


def _voice_preset(item: Any, name: str | None = None) -> VoicePreset:
    if not isinstance(item, dict):
        raise vol.Invalid('expected each preset to be an object such as {"name": "nova-calm", "voice": "nova"}')
    fields = dict(item) if name is None else {"name": name, **item}
    unknown = set(fields) - {*_PRESET_TEXT, "speed", "languages"}
    if unknown:
        raise vol.Invalid(
            f"unknown preset field {sorted(unknown)[0]!r} (known: {', '.join(_PRESET_TEXT)}, speed, languages)"
        )
    for key in _PRESET_TEXT:
        value = fields.get(key)
        if value is not None and not isinstance(value, (str, int, float)):
            raise vol.Invalid(f"preset field {key!r} must be text")
        fields[key] = str(value).strip() if value is not None and str(value).strip() else None
    for key in ("name", "voice"):
        if fields[key] is None:
            raise vol.Invalid(f"every preset needs a {key}")
    try:
        speed = optional(number(float, 0.25, 4.0))(fields.get("speed"))
    except vol.Invalid as err:
        raise vol.Invalid(f"preset {fields['name']!r}: speed {err.msg}") from None
    languages = tuple(words(fields.get("languages") or []))
    return VoicePreset(
        fields["name"], fields["voice"], fields["model"], fields["instructions"], speed, languages, fields["label"]
    )


def _voice_presets(value: Any) -> tuple[VoicePreset, ...]:
    """A JSON (or YAML) list of presets, or a mapping of name -> preset."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise vol.Invalid(f"malformed JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if value is None:
        return ()
    if isinstance(value, dict):
        presets = [_voice_preset(item, str(name)) for name, item in value.items()]
    elif isinstance(value, (list, tuple)):
        presets = [_voice_preset(item) for item in value]
    else:
        raise vol.Invalid("expected a list of presets")
    names = [preset.name for preset in presets]
    if len(set(names)) != len(names):
        raise vol.Invalid(f"two presets are named {next(n for n in names if names.count(n) > 1)!r}")
    return tuple(presets)


def _pronunciation_file(value: Any) -> tuple[speech_text.Pronunciation, ...]:
    """A YAML file's path; in the --config file, the mapping itself may stand here."""
    try:
        if isinstance(value, dict):
            return speech_text.parse_mapping(value)
        if value is None or not str(value).strip():
            return ()
        return speech_text.load_file(str(value).strip())
    except ValueError as err:
        raise vol.Invalid(str(err)) from None


def _pronunciation_lines(value: Any) -> tuple[speech_text.Pronunciation, ...]:
    """WRITTEN=SPOKEN lines: one per line in the environment, one per item in a list."""
    if value is None:
        return ()
    lines = value.splitlines() if isinstance(value, str) else [str(item) for item in value]
    try:
        return speech_text.parse_lines(lines)
    except ValueError as err:
        raise vol.Invalid(str(err)) from None


def _http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise vol.Invalid("expected a URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise vol.Invalid("expected an http:// or https:// URL such as https://api.openai.com/v1")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise vol.Invalid("the URL's port is not a number") from None
    return value.strip().rstrip("/")


def _zeroconf(value: Any) -> str | None:
    """Off, on under the default name, or on under a given name."""
    if value is None or value is False:
        return None
    if value is True:
        return "wyoming-openai"
    text = str(value).strip()
    if text.lower() in ("", "0", "false", "no", "off"):
        return None
    if text.lower() in ("1", "true", "yes", "on"):
        return "wyoming-openai"
    return text


def _secret(value: Any) -> Secret | None:
    if isinstance(value, Secret):
        return value
    if value is None or not str(value).strip():
        return None
    return Secret(str(value).strip())


def _backend(value: Any) -> Backend | None:
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().upper().replace("-", "_")
    if text in ("AUTO", "NONE"):
        return None
    try:
        return Backend(text)
    except ValueError:
        raise vol.Invalid(
            f"expected one of {', '.join(b.value for b in Backend)} (or leave unset to detect), got {value!r}"
        ) from None


# --- the table ------------------------------------------------------------------------------------

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TTS_FORMATS = ("wav", "pcm", "mp3", "flac", "opus", "aac")


def _opt(name: str, env: str, default: Any, validate: Callable[[Any], Any], help: str, **kw: Any) -> Option:
    return Option(name, env, default, validate, help, **kw)


OPTIONS: tuple[Option, ...] = (
    # General
    _opt("uri", "WYOMING_URI", "tcp://0.0.0.0:10300", wyoming_uri, "where the Wyoming server listens"),
    _opt("log_level", "WYOMING_LOG_LEVEL", "INFO", choice(*LOG_LEVELS), "TRACE, DEBUG, INFO, WARNING or ERROR"),
    _opt("log_format", "WYOMING_LOG_FORMAT", "text", lower_choice("text", "json"), "text, or json lines"),
    _opt("log_file", "WYOMING_LOG_FILE", None, optional(str), "also write the log to this file (rotated)"),
    _opt("log_max_bytes", "WYOMING_LOG_MAX_BYTES", 10 * 1024 * 1024, number(int, 0), "rotate the log file at this size (0: never)"),
    _opt("log_backup_count", "WYOMING_LOG_BACKUP_COUNT", 3, number(int, 0), "rotated log files to keep"),
    _opt("languages", "WYOMING_LANGUAGES", ["en"], words, "languages to advertise, space-separated", is_list=True),
    _opt("zeroconf", "WYOMING_ZEROCONF", None, _zeroconf, "announce the server on the local network (_wyoming._tcp) under NAME", flag_nargs="?", flag_const="wyoming-openai"),
    _opt("workers", "WYOMING_WORKERS", 1, number(int, 1, 64), "server processes sharing the port (SO_REUSEPORT), for many clients on many cores"),
    _opt("max_connections", "WYOMING_MAX_CONNECTIONS", 256, number(int, 1), "clients served at once; more are refused"),
    _opt("idle_timeout", "WYOMING_IDLE_TIMEOUT", 120.0, number(float, 1), "seconds a client may stay silent before it is disconnected"),
    _opt("max_event_bytes", "WYOMING_MAX_EVENT_BYTES", 1024 * 1024, number(int, 1024), "largest event header + data accepted from a client"),
    _opt("max_payload_bytes", "WYOMING_MAX_PAYLOAD_BYTES", 4 * 1024 * 1024, number(int, 1024), "largest event payload (audio chunk) accepted from a client"),
    _opt("upstream_timeout", "WYOMING_UPSTREAM_TIMEOUT", 30.0, number(float, 0.1), "seconds an upstream request may take in all"),
    _opt("upstream_connect_timeout", "WYOMING_UPSTREAM_CONNECT_TIMEOUT", 5.0, number(float, 0.1), "seconds to connect to an upstream"),
    _opt("upstream_read_timeout", "WYOMING_UPSTREAM_READ_TIMEOUT", 15.0, number(float, 0.1), "seconds an upstream may stay silent mid-response"),
    _opt("upstream_retries", "WYOMING_UPSTREAM_RETRIES", 1, number(int, 0, 5), "immediate retries after a connection failure or 502/503/504 (never after audio has been sent on)"),
    _opt("upstream_retry_after_max", "WYOMING_UPSTREAM_RETRY_AFTER_MAX", 2.0, number(float, 0, 60), "a rate-limited (429) request is retried when its Retry-After is at most this many seconds (0: never)"),
    _opt("upstream_max_connections", "WYOMING_UPSTREAM_MAX_CONNECTIONS", 256, number(int, 1), "pooled keep-alive connections per upstream (more requests wait for one)"),
    _opt("http_port", "WYOMING_HTTP_PORT", None, optional(number(int, 0, 65535)), "serve /health, /metrics and a status page over HTTP on this port, on --uri's host (off when unset)"),
    # Speech to text
    _opt("stt_openai_key", "STT_OPENAI_KEY", None, _secret, "API key for speech-to-text (default: OPENAI_API_KEY)", secret=True),
    _opt("stt_openai_url", "STT_OPENAI_URL", OPENAI_URL, _http_url, "base URL of the speech-to-text API"),
    _opt("stt_backend", "STT_BACKEND", None, _backend, "OPENAI, SPEACHES, KOKORO_FASTAPI or LOCALAI (detected when unset)"),
    _opt("stt_models", "STT_MODELS", ["gpt-4o-mini-transcribe", "whisper-1"], words, "speech-to-text models; the first is the default", is_list=True),
    _opt("stt_streaming_models", "STT_STREAMING_MODELS", [], words, "models whose transcripts are streamed (stream=true)", is_list=True),
    _opt("stt_realtime_models", "STT_REALTIME_MODELS", [], words, "models used through the Realtime API", is_list=True),
    _opt("stt_temperature", "STT_TEMPERATURE", None, optional(number(float, 0.0, 1.0)), "sampling temperature, 0 to 1"),
    _opt("stt_prompt", "STT_PROMPT", None, optional(str), "text that guides the transcription's style or vocabulary"),
    _opt("stt_extra_body", "STT_EXTRA_BODY", {}, json_object, "JSON object of extra fields for each transcription request"),
    _opt("stt_realtime_extra_body", "STT_REALTIME_EXTRA_BODY", {}, json_object, "JSON object merged into the Realtime transcription session"),
    _opt("stt_max_seconds", "STT_MAX_SECONDS", 120.0, number(float, 1), "longest utterance accepted, in seconds of audio"),
    _opt("stt_silence_gate", "STT_SILENCE_GATE", True, boolean, "answer an empty transcript, without asking the upstream, for an utterance that never rises above --stt-silence-threshold", flag_nargs="?", flag_const="true"),
    _opt("stt_silence_threshold", "STT_SILENCE_THRESHOLD", -60.0, number(float, -96, 0), "peak level, in dBFS, below which an utterance counts as silence (near digital silence: a quiet voice is far louder)"),
    _opt("stt_hallucination_filter", "STT_HALLUCINATION_FILTER", True, boolean, "drop Whisper's known hallucinations (\"Thank you for watching.\", \"Subtitles by …\") transcribed from short or quiet audio", flag_nargs="?", flag_const="true"),
    _opt("stt_fallback_url", "STT_FALLBACK_URL", None, optional(_http_url), "base URL of a second speech-to-text API, asked when the first fails"),
    _opt("stt_fallback_key", "STT_FALLBACK_KEY", None, _secret, "API key for the speech-to-text fallback", secret=True),
    _opt("stt_fallback_model", "STT_FALLBACK_MODEL", None, optional(str), "model asked of the speech-to-text fallback (default: the request's)"),
    # Text to speech
    _opt("tts_openai_key", "TTS_OPENAI_KEY", None, _secret, "API key for text-to-speech (default: OPENAI_API_KEY)", secret=True),
    _opt("tts_openai_url", "TTS_OPENAI_URL", OPENAI_URL, _http_url, "base URL of the text-to-speech API"),
    _opt("tts_backend", "TTS_BACKEND", None, _backend, "OPENAI, SPEACHES, KOKORO_FASTAPI or LOCALAI (detected when unset)"),
    _opt("tts_models", "TTS_MODELS", ["gpt-4o-mini-tts", "tts-1"], words, "text-to-speech models; the first is the default", is_list=True),
    _opt("tts_voices", "TTS_VOICES", [], words, "voices to offer (discovered, or OpenAI's, when empty); the first is the default", is_list=True),
    _opt("tts_voice_labels", "TTS_VOICE_LABELS", {}, _voice_labels, "display names: voice=Label pairs, or a JSON object", is_list=True),
    _opt("tts_voice_presets", "TTS_VOICE_PRESETS", [], _voice_presets, "named voices: a JSON list of {name, voice, model, instructions, speed, languages, label}, offered after the voices"),
    _opt("tts_clean_text", "TTS_CLEAN_TEXT", True, boolean, "speak the words of markdown, links, emoji and HTML, not the marks (off: the text goes upstream untouched)", flag_nargs="?", flag_const="true"),
    _opt("tts_clean_urls", "TTS_CLEAN_URLS", "host", lower_choice(*speech_text.URL_CHOICES), "what a bare URL becomes when cleaning: host (its host name) or drop"),
    _opt("tts_pronunciations", "TTS_PRONUNCIATIONS", None, _pronunciation_file, "YAML file of pronunciations (written: spoken, per language; see docs/pronunciations.md)"),
    _opt("tts_pronounce", "TTS_PRONOUNCE", None, _pronunciation_lines, "pronunciations as WRITTEN=SPOKEN lines (de:WRITTEN=SPOKEN for one language, /REGEX/=SPOKEN)", is_list=True),
    _opt("tts_streaming_models", "TTS_STREAMING_MODELS", [], words, "models that speak while the text is still arriving", is_list=True),
    _opt("tts_realtime_models", "TTS_REALTIME_MODELS", [], words, "models used through the Realtime API", is_list=True),
    _opt("tts_speed", "TTS_SPEED", None, optional(number(float, 0.25, 4.0)), "speaking speed, 0.25 to 4.0"),
    _opt("tts_instructions", "TTS_INSTRUCTIONS", None, optional(str), "how the voice should speak (gpt-4o-mini-tts)"),
    _opt("tts_extra_body", "TTS_EXTRA_BODY", {}, json_object, "JSON object of extra fields for each speech request"),
    _opt("tts_realtime_extra_body", "TTS_REALTIME_EXTRA_BODY", {}, json_object, "JSON object merged into the Realtime speech session"),
    _opt("tts_streaming_min_words", "TTS_STREAMING_MIN_WORDS", None, optional(number(int, 1)), "fewest words sent in one streamed request"),
    _opt("tts_streaming_max_chars", "TTS_STREAMING_MAX_CHARS", None, optional(number(int, 1)), "most characters sent in one streamed request"),
    _opt("tts_concurrent_requests", "TTS_CONCURRENT_REQUESTS", 3, number(int, 1, 32), "sentences synthesized at once while streaming"),
    _opt("tts_split_text", "TTS_SPLIT_TEXT", False, boolean, "also split long plain synthesize text into sentences spoken as they are ready", flag_nargs="?", flag_const="true"),
    _opt("tts_response_format", "TTS_RESPONSE_FORMAT", "wav", lower_choice(*TTS_FORMATS), "audio format asked of the upstream"),
    _opt("tts_pcm_sample_rate", "TTS_PCM_SAMPLE_RATE", 24000, number(int, 8000, 192000), "sample rate of the upstream's raw pcm"),
    _opt("tts_sample_rate", "TTS_SAMPLE_RATE", None, optional(number(int, 8000, 192000)), "resample speech to this rate (default: as the upstream sends it)"),
    _opt("tts_fallback_url", "TTS_FALLBACK_URL", None, optional(_http_url), "base URL of a second text-to-speech API, asked when the first fails"),
    _opt("tts_fallback_key", "TTS_FALLBACK_KEY", None, _secret, "API key for the text-to-speech fallback", secret=True),
    _opt("tts_fallback_model", "TTS_FALLBACK_MODEL", None, optional(str), "model asked of the text-to-speech fallback (default: the request's)"),
    _opt("tts_fallback_voice", "TTS_FALLBACK_VOICE", None, optional(str), "voice asked of the text-to-speech fallback (default: the request's if it has it, else its first)"),
)  # fmt: skip

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
# Not flags: read from the environment only, as the OpenAI tools do.
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
CONFIG_ENV = "WYOMING_CONFIG"


@dataclass(frozen=True)
class Settings:
    """Validated configuration, read once at start-up and passed down."""

    uri: str
    log_level: str
    log_format: str
    log_file: str | None
    log_max_bytes: int
    log_backup_count: int
    languages: list[str]
    zeroconf: str | None
    workers: int
    max_connections: int
    idle_timeout: float
    max_event_bytes: int
    max_payload_bytes: int
    upstream_timeout: float
    upstream_connect_timeout: float
    upstream_read_timeout: float
    upstream_retries: int
    upstream_retry_after_max: float
    upstream_max_connections: int
    http_port: int | None
    stt_openai_key: Secret | None
    stt_openai_url: str
    stt_backend: Backend | None
    stt_models: list[str]
    stt_streaming_models: list[str]
    stt_realtime_models: list[str]
    stt_temperature: float | None
    stt_prompt: str | None
    stt_extra_body: dict[str, Any]
    stt_realtime_extra_body: dict[str, Any]
    stt_max_seconds: float
    stt_silence_gate: bool
    stt_silence_threshold: float
    stt_hallucination_filter: bool
    stt_fallback_url: str | None
    stt_fallback_key: Secret | None
    stt_fallback_model: str | None
    tts_openai_key: Secret | None
    tts_openai_url: str
    tts_backend: Backend | None
    tts_models: list[str]
    tts_voices: list[str]
    tts_voice_labels: dict[str, str]
    tts_voice_presets: tuple[VoicePreset, ...]
    tts_clean_text: bool
    tts_clean_urls: str
    tts_pronunciations: tuple[speech_text.Pronunciation, ...]
    tts_pronounce: tuple[speech_text.Pronunciation, ...]
    tts_streaming_models: list[str]
    tts_realtime_models: list[str]
    tts_speed: float | None
    tts_instructions: str | None
    tts_extra_body: dict[str, Any]
    tts_realtime_extra_body: dict[str, Any]
    tts_streaming_min_words: int | None
    tts_streaming_max_chars: int | None
    tts_concurrent_requests: int
    tts_split_text: bool
    tts_response_format: str
    tts_pcm_sample_rate: int
    tts_sample_rate: int | None
    tts_fallback_url: str | None
    tts_fallback_key: Secret | None
    tts_fallback_model: str | None
    tts_fallback_voice: str | None
    secrets: tuple[str, ...] = field(default=(), repr=False)


def build_parser() -> argparse.ArgumentParser:
    return build_option_parser(
        OPTIONS,
        "wyoming-openai",
        "Wyoming server for OpenAI-compatible speech-to-text and text-to-speech APIs.",
        CONFIG_ENV,
        __version__,
    )


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse, merge and validate. Raises SettingsError with one line naming the flag and env var."""
    environ = os.environ if environ is None else environ
    values, _ = resolve(OPTIONS, build_parser(), argv, environ, CONFIG_ENV)

    general_key = _secret(environ.get(OPENAI_API_KEY_ENV))
    for name in ("stt_openai_key", "tts_openai_key"):  # not the fallbacks': a local server needs no cloud key
        if values[name] is None:
            values[name] = general_key

    _check_consistency(values)
    keys = ("stt_openai_key", "tts_openai_key", "stt_fallback_key", "tts_fallback_key")
    urls = ("stt_openai_url", "tts_openai_url", "stt_fallback_url", "tts_fallback_url")
    secrets = tuple(
        sorted(
            {values[name].reveal() for name in keys if values[name]}
            | {s for name in urls if values[name] for s in url_credentials(values[name])},
            key=len,
            reverse=True,
        )
    )
    return Settings(**values, secrets=secrets)


def _check_consistency(values: dict[str, Any]) -> None:
    for kind in ("stt", "tts"):
        # As in 0.8.0: streaming and realtime models are served too, and come first.
        listed = values[f"{kind}_streaming_models"] + values[f"{kind}_realtime_models"] + values[f"{kind}_models"]
        values[f"{kind}_models"] = list(dict.fromkeys(listed))
    if not values["stt_models"] and not values["tts_models"]:
        raise SettingsError(
            f"nothing to serve: give {OPTIONS_BY_NAME['stt_models'].where()} or {OPTIONS_BY_NAME['tts_models'].where()}"
        )
    if values["workers"] > 1:
        uri = urlsplit(values["uri"])
        if uri.scheme != "tcp" or not uri.port:
            raise SettingsError(
                f"invalid {OPTIONS_BY_NAME['workers'].where()}: several workers need a tcp:// URI with a fixed port"
            )
    if not values["languages"]:
        raise SettingsError(f"invalid {OPTIONS_BY_NAME['languages'].where()}: give at least one language")


_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)([^/@]*)@", re.IGNORECASE)


def url_credentials(url: str) -> list[str]:
    """The user and password embedded in a URL, which must be kept out of every log line."""
    parts = urlsplit(url)
    return [part for part in (parts.password, parts.username) if part]


def redact_url(url: str) -> str:
    """The URL as it may be shown: ``https://***@host/v1`` when it carries credentials."""
    return _USERINFO.sub(r"\1***@", url)
