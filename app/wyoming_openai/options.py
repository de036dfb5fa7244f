"""Option tables: one row per option builds the command line, the environment and the YAML file,
and validates each value (voluptuous). Used by the proxy's settings and the OpenAI API's config.

Precedence, lowest first: built-in default < ``--config`` file < environment < command line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol
import yaml


class OptionError(Exception):
    """A bad value; the message is one line naming the flag and the environment variable."""


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    default: Any
    validate: Callable[[Any], Any]
    help: str
    is_list: bool = False  # takes several words on the command line
    flag_nargs: str | None = None  # "?" for a flag that may stand alone, meaning flag_const
    flag_const: Any = None
    secret: bool = False  # its value never appears in a message, even when it is the bad part

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def where(self) -> str:
        return f"{self.flag} ({self.env})"


# --- validators: text (from env or flags) or YAML values -> Python --------------------------------


def words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return [str(item) for part in value for item in str(part).split()]
    raise vol.Invalid("expected a space-separated list")


def json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise vol.Invalid("expected a JSON object")
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise vol.Invalid(f"malformed JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(parsed, dict):
        raise vol.Invalid('expected a JSON object such as {"key": "value"}')
    return parsed


def wyoming_uri(value: Any) -> str:
    if not isinstance(value, str):
        raise vol.Invalid("expected a URI")
    parts = urlsplit(value)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname is None or port is None:
            raise vol.Invalid("expected tcp://HOST:PORT, for example tcp://0.0.0.0:10300")
    elif parts.scheme == "unix":
        if not parts.path:
            raise vol.Invalid("expected unix:///path/to/socket")
    elif parts.scheme != "stdio":
        raise vol.Invalid("expected tcp://HOST:PORT, unix:///PATH or stdio://")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise vol.Invalid("expected true or false")


def optional(validator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return validator(value)

    return validate


def number(kind: type, low: float | None = None, high: float | None = None) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        if isinstance(value, bool):
            raise vol.Invalid(f"expected {'an integer' if kind is int else 'a number'}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise vol.Invalid(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise vol.Invalid(f"expected an integer, got {value!r}")
        if (low is not None and number < low) or (high is not None and number > high):
            if high is None:
                raise vol.Invalid(f"must be at least {low}, got {number}")
            raise vol.Invalid(f"must be between {low} and {high}, got {number}")
        return number

    return validate


def choice(*choices: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        text = str(value).strip().upper()
        if text not in choices:
            raise vol.Invalid(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return validate


def lower_choice(*choices: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise vol.Invalid(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return validate


# --- parsing ----------------------------------------------------------------------------------------


def build_parser(
    options: Sequence[Option], prog: str, description: str, config_env: str, version: str | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Every option can also be set by its environment variable or in the --config file "
        "(same name, in snake_case). The command line wins over the environment, which wins over the file.",
        argument_default=argparse.SUPPRESS,
    )
    if version:
        parser.add_argument("--version", action="version", version=f"{prog} {version}")
    parser.add_argument("--config", metavar="FILE.yaml", help=f"YAML file of options [{config_env}]")
    for option in options:
        kwargs: dict[str, Any] = {"dest": option.name, "help": f"{option.help} [{option.env}]"}
        if option.is_list:
            kwargs["nargs"] = "*"
        elif option.flag_nargs:
            kwargs["nargs"] = option.flag_nargs
            kwargs["const"] = option.flag_const
        if option.secret:
            kwargs["metavar"] = "KEY"
        parser.add_argument(option.flag, **kwargs)
    return parser


def load_config_file(path: str, options: Sequence[Option]) -> dict[str, Any]:
    names = {option.name for option in options}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise OptionError(f"cannot read --config file {path}: {err.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise OptionError(f"--config file {path} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise OptionError(f"--config file {path} must hold a mapping of option: value")
    values: dict[str, Any] = {}
    for key, value in loaded.items():
        name = str(key).lower().replace("-", "_")
        if name not in names:
            raise OptionError(f"--config file {path}: unknown option {key!r}")
        values[name] = value
    return values


def resolve(
    options: Sequence[Option],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    environ: Mapping[str, str],
    config_env: str,
) -> tuple[dict[str, Any], str | None]:
    """Every option's validated value, and the config file used. argparse exits (2) on unknown flags."""
    args = vars(parser.parse_args(None if argv is None else list(argv)))
    config_path = args.pop("config", None) or environ.get(config_env) or None
    raw: dict[str, Any] = {option.name: option.default for option in options}
    if config_path:
        raw.update(load_config_file(config_path, options))
    for option in options:
        if option.env in environ:
            raw[option.name] = environ[option.env]
    raw.update(args)
    values: dict[str, Any] = {}
    for option in options:
        try:
            values[option.name] = vol.Schema(option.validate)(raw[option.name])
        except vol.Invalid as err:
            raise OptionError(f"invalid {option.where()}: {'invalid value' if option.secret else err.msg}") from None
    return values, config_path
