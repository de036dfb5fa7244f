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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol
import yaml

ENV_PREFIX = "OPENAI_API_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A bad option value; the message is one line naming the flag and environment variable."""


# --- validators: text from env or flags, or YAML values -> Python --------------------------------


def _words(value: Any) -> list[str]:
    # Space- or comma-separated, so "a,b" and "a b" both work in an environment variable.
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, (list, tuple)):
        return [word for item in value for word in _words(str(item))]
    raise vol.Invalid("expected a list")


def _wyoming_uris(value: Any) -> list[str]:
    uris = _words(value)
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme == "tcp":
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None:
                raise vol.Invalid(f"expected tcp://HOST:PORT such as tcp://127.0.0.1:10200, got {uri!r}")
        elif parts.scheme == "unix":
            if not parts.path:
                raise vol.Invalid(f"expected unix:///path/to/socket, got {uri!r}")
        else:
            raise vol.Invalid(f"expected tcp://HOST:PORT or unix:///PATH, got {uri!r}")
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


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise vol.Invalid(f"expected true or false, got {value!r}")


def _number(kind: type, low: float, high: float | None = None) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if isinstance(value, bool):
            raise vol.Invalid("expected a number")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise vol.Invalid(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if number < low or (high is not None and number > high):
            raise vol.Invalid(f"must be between {low:g} and {high:g}, got {number:g}" if high else f"must be at least {low:g}, got {number:g}")
        return number

    return validate


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


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    validate: Callable[[Any], Any]
    help: str
    is_list: bool = False
    is_flag: bool = False
    secret: bool = False
    env_name: str | None = None  # when the derived name would stutter (OPENAI_API_API_KEYS)

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def where(self) -> str:
        return f"{self.flag} ({self.env})"


OPTIONS: tuple[Option, ...] = (
    Option("host", "0.0.0.0", _host, "address to listen on"),
    Option("port", 8000, _number(int, 1, 65535), "HTTP port"),
    Option("wyoming_uris", [], _wyoming_uris, "Wyoming servers, e.g. tcp://127.0.0.1:10200 tcp://127.0.0.1:10300", is_list=True),
    Option("zeroconf", False, _boolean, "also use Wyoming servers announced on the local network (_wyoming._tcp)", is_flag=True),
    Option("api_keys", [], _words, "API keys clients must send as a bearer token (none: no authentication); prefer the environment", is_list=True, secret=True, env_name=ENV_PREFIX + "KEYS"),
    Option("cors_origins", [], _origins, "browser origins allowed to call the API (* for any; none: CORS off)", is_list=True),
    Option("max_upload_mb", 25.0, _number(float, 0.001, 4096), "largest request body, in megabytes (transcription uploads)"),
    Option("max_input_chars", 4096, _number(int, 1, 1_000_000), "longest text accepted for speech"),
    Option("max_audio_seconds", 1800.0, _number(float, 1), "longest decoded upload accepted for transcription, in seconds"),
    Option("connect_timeout", 5.0, _number(float, 0.05, 600), "seconds to connect to a Wyoming server"),
    Option("read_timeout", 120.0, _number(float, 0.05, 3600), "seconds a Wyoming server may stay silent while answering"),
    Option("refresh_interval", 60.0, _number(float, 0, 86400), "seconds between refreshes of what the servers offer (0: only on demand)"),
    Option("log_level", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
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
    max_audio_seconds: float = 1800.0
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    refresh_interval: float = 60.0
    log_level: str = "INFO"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OpenAI-compatible speech API (/v1/audio/speech, /v1/audio/transcriptions, /v1/models) "
        "in front of Wyoming text-to-speech and speech-to-text servers.",
        epilog=f"Every option can also be set by its environment variable ({ENV_PREFIX}…) or in the --config "
        "YAML file (same name, in snake_case). The command line wins over the environment, which wins over the file.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help=f"YAML file of options [{CONFIG_ENV}]")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.name, "help": f"{option.help} [{option.env}]"}
        if option.is_list:
            kwargs["nargs"] = "*"
        elif option.is_flag:
            kwargs["nargs"] = "?"
            kwargs["const"] = "true"
        if option.secret:
            kwargs["metavar"] = "KEY"
        parser.add_argument(option.flag, **kwargs)
    return parser


def _load_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read --config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"--config file {path} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config file {path} must hold a mapping of option: value")
    values = {}
    for key, value in loaded.items():
        name = str(key).lower().replace("-", "_")
        if name not in OPTIONS_BY_NAME:
            raise ConfigError(f"--config file {path}: unknown option {key!r}")
        values[name] = value
    return values


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None, prog: str = "wyoming-openai serve-openai") -> ApiSettings:
    """Parse, merge and validate. argparse exits (status 2) on unknown flags; bad values raise ConfigError."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser(prog).parse_args(list(argv)))
    raw: dict[str, Any] = {option.name: option.default for option in OPTIONS}
    config_path = args.pop("config", None) or environ.get(CONFIG_ENV) or None
    if config_path:
        raw.update(_load_file(config_path))
    for option in OPTIONS:
        if option.env in environ:
            raw[option.name] = environ[option.env]
    raw.update(args)

    values: dict[str, Any] = {}
    for option in OPTIONS:
        try:
            value = vol.Schema(option.validate)(raw[option.name])
        except vol.Invalid as err:
            # A secret's value never appears in the message, even when it is the bad part.
            message = "invalid value" if option.secret else err.msg
            raise ConfigError(f"invalid {option.where()}: {message}") from None
        values[option.name] = tuple(value) if isinstance(value, list) else value
    if not values["wyoming_uris"] and not values["zeroconf"]:
        raise ConfigError(
            f"no Wyoming servers: give {OPTIONS_BY_NAME['wyoming_uris'].where()} or enable {OPTIONS_BY_NAME['zeroconf'].where()}"
        )
    return ApiSettings(**values)
