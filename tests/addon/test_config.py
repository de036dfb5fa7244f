"""config.yaml, build.yaml, repository.yaml, translations, AppArmor and the add-on's files,
checked against the Supervisor's rules and the community add-on linter's (restated here from
their sources: home-assistant/supervisor supervisor/apps/{validate,options,utils}.py and
frenck/action-addon-linter), plus what this add-on promises on top.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADDON, API_RUN_SCRIPT, DISCOVERY_SCRIPT, REPO, RUN_SCRIPT, load_yaml

from wyoming_openai import __version__, settings
from wyoming_openai.openai_api import config as api_config

# --- the Supervisor's vocabulary ------------------------------------------------------------

SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")
ARCHES = {"amd64", "aarch64"}  # armhf, armv7 and i386 are deprecated
PORT_KEY = re.compile(r"^\d+(?:/tcp|/udp)?$")
# Base images in build.yaml: registry/path/name[:tag] with {arch} placeholders allowed.
BUILD_IMAGE = re.compile(r"^([a-zA-Z\-.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)(:[.\-\w{}]+)?$")
# One element of an options schema.
SCHEMA_ELEMENT = re.compile(
    r"^(?:"
    r"bool|email|url|port"
    r"|device(?:\(subsystem=[a-z]+\))?"
    r"|(?P<kind>str|password|int|float)(?:\((?P<low>-?\d*\.?\d+)?,(?P<high>-?\d*\.?\d+)?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<choices>.+)\)"
    r")(?P<optional>\?)?$"
)

# Every key the Supervisor reads from an add-on's config.yaml.
CONFIG_KEYS = {
    "name", "version", "slug", "description", "arch", "machine", "url", "startup", "boot", "init",
    "advanced", "stage", "ports", "ports_description", "watchdog", "webui", "ingress", "ingress_port",
    "ingress_entry", "ingress_stream", "panel_icon", "panel_title", "panel_admin", "homeassistant",
    "host_network", "host_pid", "host_ipc", "host_uts", "host_dbus", "devices", "udev", "tmpfs", "map",
    "environment", "privileged", "apparmor", "full_access", "audio", "video", "gpio", "usb", "uart",
    "devicetree", "kernel_modules", "realtime", "hassio_api", "hassio_role", "homeassistant_api",
    "stdin", "legacy", "docker_api", "auth_api", "services", "discovery", "backup_exclude",
    "backup_pre", "backup_post", "backup", "options", "schema", "image", "ulimits", "timeout",
    "journald", "breaking_versions",
}  # fmt: skip
# The linter rejects keys written out with their default value.
CONFIG_DEFAULTS = {
    "advanced": False, "apparmor": True, "audio": False, "auth_api": False, "backup": "hot",
    "boot": "auto", "devicetree": False, "docker_api": False, "full_access": False, "gpio": False,
    "hassio_api": False, "hassio_role": "default", "homeassistant_api": False, "host_dbus": False,
    "host_ipc": False, "host_network": False, "host_pid": False, "host_uts": False, "ingress": False,
    "ingress_port": 8099, "ingress_stream": False, "init": True, "journald": False,
    "kernel_modules": False, "legacy": False, "options": {}, "panel_admin": True,
    "panel_icon": "mdi:puzzle", "realtime": False, "schema": {}, "stage": "stable",
    "startup": "application", "stdin": False, "timeout": 10, "tmpfs": False, "uart": False,
    "udev": False, "ulimits": {}, "usb": False, "video": False,
}  # fmt: skip
LOWERING_CAPABILITIES = {
    "BPF", "CHECKPOINT_RESTORE", "DAC_READ_SEARCH", "NET_ADMIN", "NET_RAW", "PERFMON", "SYS_ADMIN",
    "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO",
}  # fmt: skip

# Proxy options the form leaves out on purpose.
NOT_IN_ADDON = {
    "uri": "fixed to tcp://0.0.0.0:10300, the port the Supervisor maps and announces",
    "zeroconf": "the Supervisor's discovery announces the add-on to Home Assistant",
    "log_file": "the Supervisor keeps the add-on's log",
    "log_max_bytes": "the Supervisor keeps the add-on's log",
    "log_backup_count": "the Supervisor keeps the add-on's log",
    "workers": "one household's clients fit one process; s6 supervises that one process",
    "tts_pronunciations": "a file of the user's, which the container cannot see: the form takes lines (tts_pronounce)",
    "http_port": "fixed to the ingress port, where Home Assistant's sidebar panel reaches the status page",
    "stt_silence_threshold": "near digital silence suits every microphone; the form has the gate's switch",
}
# Form lists the proxy does not read as space-separated words: one line per item, or a JSON list of objects.
LIST_FORMS = {"tts_pronounce": "lines", "tts_voice_presets": "objects"}
# Options of the OpenAI-compatible API (wyoming-openai serve-openai), not of the proxy: the add-on's
# option -> the API's option (None: the switch, read by the run script only).
API_OPTIONS = {
    "openai_api": None,
    "openai_api_port": "port",
    "openai_api_keys": "api_keys",
    "openai_api_wyoming_uris": "wyoming_uris",
    "openai_api_clean_text": "clean_text",
}
API_PORT = 8000
INGRESS_PORT = 8099  # the Supervisor's default ingress_port
# Options whose form value is a lower-case choice the run script upper-cases ("auto": left out).
UPPER_CASED = {"stt_backend", "tts_backend", "log_level"}
LANGUAGES = ("en", "de", "fr", "es")


def is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def element(schema: Any) -> str:
    """The element type of a schema entry: "str" for ["str"]."""
    return schema[0] if isinstance(schema, list) else schema


def is_optional(schema: Any) -> bool:
    # A list of objects is never optional to the Supervisor: it must be in options, if only as [].
    return isinstance(element(schema), str) and element(schema).endswith("?")


def validate_value(schema: str | dict[str, str], value: Any) -> str | None:
    """Supervisor-style check of one value; returns the problem, or None."""
    if isinstance(schema, dict):
        return validate_object(schema, value)
    if value is None:
        return "null values are refused"
    match = SCHEMA_ELEMENT.match(schema)
    assert match, schema
    kind = match.group("kind")
    low = float(match.group("low")) if match.group("low") else None
    high = float(match.group("high")) if match.group("high") else None
    if kind in ("str", "password"):
        if not isinstance(value, str):
            return "not a string"
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return "length out of range"
        return None
    if kind in ("int", "float"):
        try:
            number = int(value) if kind == "int" else float(value)
        except (TypeError, ValueError):
            return "not a number"
        if (low is not None and number < low) or (high is not None and number > high):
            return "out of range"
        return None
    if schema.rstrip("?") == "url":
        return None if is_url(value) else "not a URL"
    if match.group("choices"):
        return None if str(value) in match.group("choices").split("|") else "not a choice"
    if schema.rstrip("?") == "bool":
        return None if isinstance(value, bool) else "not a boolean"
    return None


def validate_object(schema: dict[str, str], value: Any) -> str | None:
    """An item of a list of objects: each field checked; a field without "?" is required."""
    if not isinstance(value, dict):
        return "not an object"
    if set(value) - set(schema):
        return f"unknown fields {sorted(set(value) - set(schema))}"  # the Supervisor drops them, with a warning
    for field_name, field_schema in schema.items():
        if field_name not in value:
            if not field_schema.endswith("?"):
                return f"missing {field_name}"
        elif problem := validate_value(field_schema, value[field_name]):
            return f"{field_name}: {problem}"
    return None


# --- config.yaml ----------------------------------------------------------------------------


def test_required_fields(addon_config):
    for key in ("name", "version", "slug", "description", "arch"):
        assert key in addon_config, key
    assert isinstance(addon_config["name"], str) and addon_config["name"]
    assert isinstance(addon_config["description"], str) and addon_config["description"]
    assert SLUG.match(addon_config["slug"])


def test_version_is_a_quoted_string_equal_to_the_package():
    raw = (ADDON / "config.yaml").read_text()
    assert re.search(r'^version: "[^"]+"$', raw, re.MULTILINE), "quote the version"
    assert load_yaml(ADDON / "config.yaml")["version"] == __version__


def test_only_known_keys_and_no_defaults_spelled_out(addon_config):
    assert set(addon_config) <= CONFIG_KEYS, set(addon_config) - CONFIG_KEYS
    for key, default in CONFIG_DEFAULTS.items():
        if key in addon_config:
            assert addon_config[key] != default, f"{key!r} uses its default value: remove it"


def test_architectures_init_discovery(addon_config):
    assert set(addon_config["arch"]) == ARCHES
    assert len(addon_config["arch"]) == len(ARCHES)
    assert addon_config["init"] is False, "s6-overlay v3 is PID 1: the Docker init must stay off"
    assert addon_config["discovery"] == ["wyoming"]
    assert is_url(addon_config["url"])


def proxy_schema(addon_config: dict[str, Any]) -> dict[str, Any]:
    """The form's options for the Wyoming proxy (all but the OpenAI-compatible API's)."""
    return {name: schema for name, schema in addon_config["schema"].items() if name not in API_OPTIONS}


def test_port(addon_config):
    ports = addon_config["ports"]
    assert set(ports) == {"10300/tcp", f"{API_PORT}/tcp", f"{INGRESS_PORT}/tcp"}
    # The API's port and the status page's are published only when the user gives them a host port
    # (DOCS.md says why); ingress reaches the page without.
    assert ports[f"{API_PORT}/tcp"] is None and ports[f"{INGRESS_PORT}/tcp"] is None
    for key, host_port in ports.items():
        assert PORT_KEY.match(key)
        assert host_port is None or (isinstance(host_port, int) and 1 <= host_port <= 65535)
    assert set(addon_config["ports_description"]) == set(ports)
    assert all(isinstance(text, str) and text for text in addon_config["ports_description"].values())


def test_the_port_is_the_same_everywhere(addon_config):
    port = int(next(iter(addon_config["ports"])).split("/")[0])
    for script in (RUN_SCRIPT, DISCOVERY_SCRIPT, API_RUN_SCRIPT):
        assert f"readonly WYOMING_PORT={port}\n" in script.read_text(), script
    assert f"EXPOSE {port}/tcp" in (REPO / "Dockerfile").read_text()


def test_the_status_page_is_on_the_ingress_port_with_a_panel(addon_config):
    assert addon_config["ingress"] is True
    assert addon_config.get("ingress_port", INGRESS_PORT) == INGRESS_PORT
    assert addon_config["panel_icon"].startswith("mdi:") and addon_config["panel_title"]
    for script in (RUN_SCRIPT, API_RUN_SCRIPT):
        assert f"readonly HTTP_PORT={INGRESS_PORT}\n" in script.read_text(), script


def test_schema_elements_are_valid(addon_config):
    for name, schema in addon_config["schema"].items():
        if isinstance(schema, list):
            assert len(schema) == 1 and isinstance(schema[0], (str, dict)), name
        if isinstance(element(schema), dict):  # a list of objects: plain elements inside, no further nesting
            for field_name, field_schema in element(schema).items():
                assert isinstance(field_schema, str) and SCHEMA_ELEMENT.match(field_schema), (name, field_name)
            continue
        assert SCHEMA_ELEMENT.match(element(schema)), f"{name}: unknown type {schema!r}"


def test_options_validate_against_the_schema(addon_config):
    schema = addon_config["schema"]
    for name, value in addon_config["options"].items():
        assert name in schema, f"option {name} is not in the schema"
        if isinstance(schema[name], list):
            assert isinstance(value, list), name
            for item in value:
                assert validate_value(schema[name][0], item) is None, name
        else:
            assert validate_value(schema[name], value) is None, name


def test_options_left_out_are_optional(addon_config):
    for name, schema in addon_config["schema"].items():
        if name not in addon_config["options"]:
            assert is_optional(schema), f"{name} is required but has no default in options"


def test_keys_are_passwords_and_empty_by_default(addon_config):
    for name in ("stt_openai_key", "tts_openai_key"):
        assert addon_config["schema"][name] == "password?"
        assert addon_config["options"][name] == ""
    for name in ("stt_fallback_key", "tts_fallback_key"):  # no fallback unless one is given
        assert addon_config["schema"][name] == "password?" and name not in addon_config["options"]


def test_every_form_option_is_a_proxy_option(addon_config):
    for name in proxy_schema(addon_config):
        assert name in settings.OPTIONS_BY_NAME, f"{name} is not an option of the proxy"


def test_every_proxy_option_is_in_the_form_or_left_out_on_purpose(addon_config):
    missing = {option.name for option in settings.OPTIONS} - set(proxy_schema(addon_config))
    assert missing == set(NOT_IN_ADDON), missing ^ set(NOT_IN_ADDON)


def test_lists_in_the_form_are_lists_for_the_proxy(addon_config):
    for name, schema in proxy_schema(addon_config).items():
        option = settings.OPTIONS_BY_NAME[name]
        proxy_takes_words = option.validate is settings.words
        assert isinstance(schema, list) == (proxy_takes_words or name in LIST_FORMS), name
    assert isinstance(element(addon_config["schema"]["tts_voice_presets"]), dict)


def proxy_accepts(name: str, value: Any) -> bool:
    option = settings.OPTIONS_BY_NAME[name]
    try:
        option.validate(str(value))
    except Exception:  # noqa: BLE001 - voluptuous.Invalid or the proxy's own
        return False
    return True


def test_the_form_accepts_only_what_the_proxy_accepts(addon_config):
    """Range ends and every choice of the form are valid for the proxy."""
    for name, schema in proxy_schema(addon_config).items():
        if isinstance(element(schema), dict):
            continue  # test_preset_fields_are_the_proxy_s
        match = SCHEMA_ELEMENT.match(element(schema))
        if match.group("choices"):
            for choice in match.group("choices").split("|"):
                if name in UPPER_CASED:
                    choice = choice.upper()
                assert proxy_accepts(name, choice), f"{name}: {choice}"
        if match.group("kind") in ("int", "float"):
            for end in (match.group("low"), match.group("high")):
                if end is not None:
                    assert proxy_accepts(name, end), f"{name}: {end}"


def test_default_options_are_valid_for_the_proxy(addon_config):
    for name, value in addon_config["options"].items():
        if name in API_OPTIONS:
            continue
        if name in UPPER_CASED:
            value = str(value).upper()
        if isinstance(value, list):
            value = " ".join(value)
        assert proxy_accepts(name, value), name


def test_preset_fields_are_the_proxy_s(addon_config):
    fields = element(addon_config["schema"]["tts_voice_presets"])
    assert set(fields) == {f.name for f in dataclasses.fields(settings.VoicePreset)}
    assert {name for name, schema in fields.items() if not schema.endswith("?")} == {"name", "voice"}
    low, high = SCHEMA_ELEMENT.match(fields["speed"]).group("low", "high")
    for speed in (low, high):
        preset = {
            "name": "n",
            "voice": "v",
            "model": "m",
            "instructions": "i",
            "languages": "en de",
            "speed": float(speed),
        }
        assert validate_object(fields, preset) is None
        assert proxy_accepts("tts_voice_presets", json.dumps([preset])), speed
    assert validate_object(fields, {"name": "n"}) == "missing voice"


# --- the OpenAI-compatible API's options ---------------------------------------------------


def test_api_options_are_the_apis_own(addon_config):
    schema = addon_config["schema"]
    assert {name for name in schema if name.startswith("openai_api")} == set(API_OPTIONS)
    for name, api_name in API_OPTIONS.items():
        if api_name is None:
            continue
        option = api_config.OPTIONS_BY_NAME[api_name]
        assert isinstance(schema[name], list) == option.is_list, name
    assert (
        api_config.OPTIONS_BY_NAME["wyoming_uris"].default == []
        and api_config.OPTIONS_BY_NAME["port"].default == API_PORT
    )


def test_api_is_off_by_default_and_its_keys_are_passwords(addon_config):
    assert addon_config["schema"]["openai_api"] == "bool"
    assert addon_config["options"]["openai_api"] is False
    assert addon_config["schema"]["openai_api_keys"] == ["password?"]
    assert addon_config["options"]["openai_api_keys"] == []
    assert addon_config["schema"]["openai_api_port"] == "port?"
    assert "openai_api_port" not in addon_config["options"]
    assert f"readonly DEFAULT_PORT={API_PORT}\n" in API_RUN_SCRIPT.read_text()


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        ("tcp://core-piper:10200", True),
        ("tcp://192.168.1.20:10300", True),
        ("tcp://core-piper", False),
        ("tcp://core piper:10200", False),
        ("http://core-piper:10200", False),
        ("unix:///run/wyoming.sock", False),
        ("tcp://core-piper:10200/x", False),
    ],
)
def test_wyoming_uris_the_form_accepts_are_accepted_by_the_api(addon_config, uri, accepted):
    """The Supervisor matches the whole value (re.fullmatch) against match(...)."""
    match = SCHEMA_ELEMENT.match(addon_config["schema"]["openai_api_wyoming_uris"][0])
    assert bool(re.fullmatch(match.group("match"), uri)) == accepted
    if accepted:
        assert api_config.OPTIONS_BY_NAME["wyoming_uris"].validate(uri) == [uri]


def test_the_api_reads_the_add_ons_with_the_default_role_only(addon_config):
    """GET /discovery answers Home Assistant only; /supervisor/info and /addons/<slug>/info are
    open to an add-on with hassio_api and the default role, which does not lower the rating."""
    assert addon_config["hassio_api"] is True
    assert "hassio_role" not in addon_config
    assert "homeassistant_api" not in addon_config


# --- security rating ------------------------------------------------------------------------


def security_rating(config: dict[str, Any], has_profile: bool) -> int:
    rating = 5
    if config.get("apparmor", True) is False:
        rating -= 1
    elif has_profile:
        rating += 1
    if config.get("ingress"):
        rating += 2
    elif config.get("auth_api"):
        rating += 1
    if set(config.get("privileged", [])) & LOWERING_CAPABILITIES or config.get("kernel_modules"):
        rating -= 1
    rating -= {"manager": 1, "admin": 2}.get(config.get("hassio_role", "default"), 0)
    if config.get("host_network"):
        rating -= 1
    if config.get("host_pid"):
        rating -= 2
    if config.get("host_uts") and "SYS_ADMIN" in config.get("privileged", []):
        rating -= 1
    if config.get("docker_api") or config.get("full_access"):
        rating = 1
    return max(1, min(8, rating))


def test_security_rating_is_at_least_6(addon_config):
    assert security_rating(addon_config, (ADDON / "apparmor.txt").is_file()) >= 6


def test_security_rating_model_sees_a_lowered_rating():
    """Guard for the model above: a profile-less, host-network add-on would not reach 6."""
    assert security_rating({"host_network": True}, has_profile=False) < 6


def test_apparmor_profile_names_the_slug(addon_config):
    lines = (ADDON / "apparmor.txt").read_text().splitlines()
    profiles = [m.group(1) for line in lines if (m := re.match(r"^profile ([^ ]+)", line))]
    assert profiles == [addon_config["slug"]], "exactly one top-level profile, named after the slug"


@pytest.mark.skipif(not shutil.which("apparmor_parser"), reason="apparmor_parser not installed")
def test_apparmor_profile_parses():
    result = subprocess.run(
        ["apparmor_parser", "--skip-kernel-load", "--skip-cache", str(ADDON / "apparmor.txt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- build.yaml and repository.yaml ---------------------------------------------------------


def test_build_yaml(addon_config):
    build = load_yaml(ADDON / "build.yaml")
    assert set(build) <= {"build_from", "args", "labels"}, "squash and codenotary are gone"
    assert set(build["build_from"]) == set(addon_config["arch"])
    for arch, image in build["build_from"].items():
        assert BUILD_IMAGE.match(image), image
        assert arch in image
    for mapping in (build.get("args", {}), build.get("labels", {})):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def test_dockerfile_default_base_is_the_same_image_for_every_arch():
    """Without BUILD_FROM (newer Supervisors, builds by hand) the multi-arch image of the
    base build.yaml names per architecture is used."""
    build = load_yaml(ADDON / "build.yaml")
    match = re.search(r"^ARG BUILD_FROM=(\S+)$", (ADDON / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "BUILD_FROM needs a default"
    registry, _, name = match.group(1).rpartition("/")
    for arch, image in build["build_from"].items():
        assert image == f"{registry}/{arch}-{name}", (arch, image)


def test_repository_yaml():
    repository = load_yaml(REPO / "repository.yaml")
    assert set(repository) <= {"name", "url", "maintainer"}
    assert isinstance(repository["name"], str) and repository["name"]
    assert is_url(repository["url"])
    assert isinstance(repository.get("maintainer", ""), str)


# --- translations -----------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_translation_names_and_describes_every_option(addon_config, language):
    translation = load_yaml(ADDON / "translations" / f"{language}.yaml")
    assert set(translation) <= {"configuration", "network"}
    configuration = translation["configuration"]
    assert set(configuration) == set(addon_config["schema"])
    for name, entry in configuration.items():
        assert set(entry) <= {"name", "description", "fields"}, name
        assert isinstance(entry.get("name"), str) and entry["name"].strip(), name
        assert isinstance(entry.get("description"), str) and entry["description"].strip(), name
    assert set(translation["network"]) == set(addon_config["ports"])


def test_translations_are_translated():
    """Not copies of English: most names differ from the English ones."""
    english = load_yaml(ADDON / "translations" / "en.yaml")["configuration"]
    for language in LANGUAGES[1:]:
        other = load_yaml(ADDON / "translations" / f"{language}.yaml")["configuration"]
        same = [name for name in english if english[name]["name"] == other[name]["name"]]
        assert len(same) <= len(english) // 10, (language, same)


# --- the add-on's other files ---------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icon_and_logo():
    assert png_size(ADDON / "icon.png") == (128, 128)
    width, height = png_size(ADDON / "logo.png")
    assert 100 <= height <= 500 and width >= height


def test_docs_cover_every_option_and_the_servers(addon_config):
    docs = (ADDON / "DOCS.md").read_text()
    for name in addon_config["schema"]:
        assert f"`{name}`" in docs, f"DOCS.md does not explain {name}"
    for server in ("OpenAI", "Speaches", "Kokoro-FastAPI", "LocalAI", "Groq"):
        assert re.search(rf"^#+ .*{re.escape(server)}", docs, re.MULTILINE), f"no example for {server}"
    assert re.search(r"^#+ Troubleshooting", docs, re.MULTILINE)


def test_changelog_starts_with_this_version(addon_config):
    changelog = (ADDON / "CHANGELOG.md").read_text()
    first = re.search(r"^## \[?([^\]\s]+)", changelog, re.MULTILINE)
    assert first and first.group(1) == addon_config["version"]


def test_image_installs_the_app_in_its_folder_at_the_addon_version(addon_config):
    """No release is pinned: the image holds the app/ staged next to the Dockerfile (see
    test_release.py), which must be the add-on's version."""
    dockerfile = (ADDON / "Dockerfile").read_text()
    assert f"ARG BUILD_VERSION={addon_config['version']}\n" in dockerfile
    assert "wyoming-openai==" not in dockerfile
    assert "../" not in re.sub(r"#.*", "", dockerfile), "the build context is the add-on folder"
    assert re.search(r"^COPY app/ ", dockerfile, re.MULTILINE)
    assert re.search(r"^COPY rootfs /$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)
    assert "wyoming-ready" in dockerfile


# The Supervisor's rule for `image:` (supervisor/validate.py docker_image): no tag (the version is
# the tag), a lower-case registry, lower-case path components that may hold {arch} or {machine}.
IMAGE_COMPONENT = re.compile(r"^[a-z0-9{][a-z0-9.\-_{}]*$")


def test_image_is_prebuilt_per_architecture(addon_config):
    image = addon_config["image"]
    registry, _, path = image.partition("/")
    assert registry == registry.lower() and "." in registry, "a registry host, lower-case"
    assert ":" not in path, "no tag: the Supervisor pulls the tag `version`"
    assert all(IMAGE_COMPONENT.match(component) for component in path.split("/")), image
    # One image per architecture, so older Supervisors (without multi-arch manifests) find theirs.
    assert "{arch}" in image


def test_minimum_home_assistant_has_streaming_tts(addon_config):
    """Streaming text-to-speech over Wyoming (synthesize-start/chunk/stop) arrived in 2025.7."""
    version = addon_config["homeassistant"]
    assert isinstance(version, str) and re.match(r"^\d{4}\.\d{1,2}\.\d+$", version), version
    assert tuple(int(part) for part in version.split(".")) >= (2025, 7, 0)


def test_no_real_looking_keys_anywhere():
    pattern = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
    paths = [REPO / "repository.yaml", REPO / ".env.example", *REPO.glob("docker-compose*.yml")]
    paths += [p for p in ADDON.rglob("*") if p.is_file() and p.suffix != ".png"]
    for path in paths:
        assert not pattern.search(path.read_text(errors="replace")), path
