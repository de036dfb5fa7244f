"""Options of the OpenAI-compatible API: one table builds the command line, environment and YAML config.

Precedence, lowest first: built-in default < ``--config`` file < environment (``OPENAI_API_*``) <
command line. Every value is validated with voluptuous; a bad one gives one line naming the flag and
the variable. API keys are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol

from ..options import Option, OptionError, boolean, number, resolve, words, wyoming_uri
from ..options import build_parser as build_option_parser

ENV_PREFIX = "OPENAI_API_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


ConfigError = OptionError  # a bad value; the message is one line naming the flag and environment variable


# --- validators: text from env or flags, or YAML values -> Python --------------------------------


def _words(value: Any) -> list[str]:
    # Space- or comma-separated, so "a,b" and "a b" both work in an environment variable.
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", " ")
    elif isinstance(value, (list, tuple)):
        value = [str(item).replace(",", " ") for item in value]
    return words(value)


def _wyoming_uris(value: Any) -> list[str]:
    uris = _words(value)
    for uri in uris:
        if urlsplit(uri).scheme == "stdio":
            raise vol.Invalid(f"expected tcp://HOST:PORT or unix:///PATH, got {uri!r}")
        try:
            wyoming_uri(uri)
        except vol.Invalid as err:
            raise vol.Invalid(f"{err.msg}, got {uri!r}") from None
    return list(dict.fromkeys(uris))


def _origins(value: Any) -> list[str]:
    origins = _words(value)
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise vol.Invalid(f"expected origins such as https://example.com (or *), got {origin!r}")
    return [o.rstrip("/") for o in origins]


def _host(value: Any) -> str:
    text = str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise vol.Invalid(f"expected a host name or address, got {value!r}")
    return text


def _log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in LOG_LEVELS:
        raise vol.Invalid(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


def _opt(
    name: str, default: Any, validate: Callable[[Any], Any], help: str, env: str | None = None, **kw: Any
) -> Option:
    return Option(name, env or ENV_PREFIX + name.upper(), default, validate, help, **kw)


OPTIONS: tuple[Option, ...] = (
    _opt("host", "0.0.0.0", _host, "address to listen on"),
    _opt("port", 8000, number(int, 1, 65535), "HTTP port"),
    _opt("wyoming_uris", [], _wyoming_uris, "Wyoming servers, e.g. tcp://127.0.0.1:10200 tcp://127.0.0.1:10300", is_list=True),
    _opt("zeroconf", False, boolean, "also use Wyoming servers announced on the local network (_wyoming._tcp)", flag_nargs="?", flag_const="true"),
    _opt("api_keys", [], _words, "API keys clients must send as a bearer token (none: no authentication); prefer the environment", is_list=True, secret=True, env=ENV_PREFIX + "KEYS"),
    _opt("cors_origins", [], _origins, "browser origins allowed to call the API (* for any; none: CORS off)", is_list=True),
    _opt("max_upload_mb", 25.0, number(float, 0.001, 4096), "largest request body, in megabytes (transcription uploads)"),
    _opt("max_input_chars", 4096, number(int, 1, 1_000_000), "longest text accepted for speech"),
    _opt("clean_text", False, boolean, "speak only the words of /v1/audio/speech input: markdown, links (their text), URLs (their host), emoji and HTML removed", flag_nargs="?", flag_const="true"),
    _opt("max_audio_seconds", 1800.0, number(float, 1), "longest decoded upload accepted for transcription, in seconds"),
    _opt("connect_timeout", 5.0, number(float, 0.05, 600), "seconds to connect to a Wyoming server"),
    _opt("read_timeout", 120.0, number(float, 0.05, 3600), "seconds a Wyoming server may stay silent while answering"),
    _opt("refresh_interval", 60.0, number(float, 0, 86400), "seconds between refreshes of what the servers offer (0: only on demand)"),
    _opt("log_level", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
)  # fmt: skip
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class ApiSettings:
    host: str = "0.0.0.0"
    port: int = 8000
    wyoming_uris: tuple[str, ...] = ()
    zeroconf: bool = False
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()
    max_upload_mb: float = 25.0
    max_input_chars: int = 4096
    clean_text: bool = False
    max_audio_seconds: float = 1800.0
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    refresh_interval: float = 60.0
    log_level: str = "INFO"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def build_parser(prog: str) -> argparse.ArgumentParser:
    return build_option_parser(
        OPTIONS,
        prog,
        "OpenAI-compatible speech API (/v1/audio/speech, /v1/audio/transcriptions, /v1/models) "
        "in front of Wyoming text-to-speech and speech-to-text servers.",
        CONFIG_ENV,
    )


def load(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, prog: str = "wyoming-openai serve-openai"
) -> ApiSettings:
    """Parse, merge and validate. argparse exits (status 2) on unknown flags; bad values raise ConfigError."""
    environ = os.environ if environ is None else environ
    values, _ = resolve(OPTIONS, build_parser(prog), argv, environ, CONFIG_ENV)
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    if not values["wyoming_uris"] and not values["zeroconf"]:
        raise ConfigError(
            f"no Wyoming servers: give {OPTIONS_BY_NAME['wyoming_uris'].where()} or enable {OPTIONS_BY_NAME['zeroconf'].where()}"
        )
    return ApiSettings(**values)
