"""Compose files, .env.example and the standalone image, checked without a Docker engine.

Compose's own merge (later files win, per environment variable) and `${VAR:-default}`
interpolation are reproduced for the few constructs these files use, so each combination's
environment can be handed to the proxy's real settings loader.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADDON, REPO, instructions, load_yaml, proxy_env_names

from wyoming_openai import __version__, settings

SERVICE = "wyoming-openai"
BASE = REPO / "docker-compose.yml"
OVERLAYS = {
    "speaches": REPO / "docker-compose.speaches.yml",
    "kokoro-fastapi": REPO / "docker-compose.kokoro-fastapi.yml",
    "localai": REPO / "docker-compose.localai.yml",
    "dev": REPO / "docker-compose.dev.yml",
}
# Variables only compose reads (interpolation), never the container.
COMPOSE_ONLY = {"WYOMING_OPENAI_IMAGE"}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def compose(path: Path) -> dict[str, Any]:
    data = load_yaml(path)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, op, default = match.group("name"), match.group("op"), match.group("default") or ""
        current = variables.get(name)
        if op == ":-":
            return current if current else default
        if op == "-":
            return default if current is None else current
        if op in (":?", "?"):
            if not current:
                raise ValueError(f"{name} is required")
            return current
        return current or ""

    return INTERPOLATION.sub(replace, value)


def merged_environment(files: list[Path], variables: dict[str, str] | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in files:
        service = compose(path)["services"].get(SERVICE, {})
        env.update(environment(service))
    return {name: interpolate(value, variables or {}) for name, value in env.items()}


def all_files() -> list[Path]:
    return [BASE, *OVERLAYS.values()]


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_the_proxy_gets_only_its_own_variables(path):
    env = environment(compose(path)["services"].get(SERVICE, {}))
    unknown = set(env) - proxy_env_names()
    assert not unknown, f"{path.name} sets variables the proxy does not read: {unknown}"


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_interpolated_variables_are_proxy_options(path):
    for match in INTERPOLATION.finditer(path.read_text()):
        name = match.group("name")
        assert name in proxy_env_names() | COMPOSE_ONLY, f"{path.name}: ${{{name}}}"


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_services_are_complete(path):
    data = compose(path)
    defined = set(data["services"])
    volumes = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        if path == BASE or name != SERVICE:
            assert "image" in service or "build" in service, f"{path.name}: {name}"
        for dependency in service.get("depends_on", []):
            assert dependency in defined, f"{path.name}: {name} depends on {dependency}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{path.name}: named volume {source} is not declared"


def test_base_file():
    data = compose(BASE)
    service = data["services"][SERVICE]
    assert service["ports"] == ["10300:10300"]
    assert interpolate(service["image"], {}).endswith(f":{__version__}")
    assert service["env_file"] == [{"path": ".env", "required": False}]


@pytest.mark.parametrize(
    "names",
    [[], ["speaches"], ["kokoro-fastapi"], ["localai"], ["dev"], ["speaches", "kokoro-fastapi"]],
    ids=lambda names: "+".join(names) or "openai",
)
def test_every_combination_loads_in_the_proxy(names):
    files = [BASE, *(OVERLAYS[name] for name in names)]
    env = merged_environment(files, {"OPENAI_API_KEY": "test-key-not-real"})
    loaded = settings.load_settings([], environ=env)
    # Each URL points at OpenAI or at a service these files start.
    services = {name for path in files for name in compose(path)["services"]}
    for url in (loaded.stt_openai_url, loaded.tts_openai_url):
        host = urlsplit(url).hostname
        assert host == "api.openai.com" or host in services, url


def test_overlays_point_the_proxy_at_their_server():
    speaches = settings.load_settings([], environ=merged_environment([BASE, OVERLAYS["speaches"]]))
    assert speaches.stt_openai_url == speaches.tts_openai_url == "http://speaches:8000/v1"
    assert speaches.stt_backend is speaches.tts_backend is settings.Backend.SPEACHES

    both = settings.load_settings(
        [], environ=merged_environment([BASE, OVERLAYS["speaches"], OVERLAYS["kokoro-fastapi"]])
    )
    assert both.stt_openai_url == "http://speaches:8000/v1"
    assert both.tts_openai_url == "http://kokoro-fastapi:8880/v1"
    assert both.tts_backend is settings.Backend.KOKORO_FASTAPI

    localai = settings.load_settings([], environ=merged_environment([BASE, OVERLAYS["localai"]]))
    assert localai.stt_backend is localai.tts_backend is settings.Backend.LOCALAI


def test_env_file_values_win_over_overlay_defaults():
    env = merged_environment([BASE, OVERLAYS["speaches"]], {"STT_MODELS": "Systran/faster-whisper-large-v3"})
    assert env["STT_MODELS"] == "Systran/faster-whisper-large-v3"


def test_dev_overlay_builds_this_checkout():
    service = compose(OVERLAYS["dev"])["services"][SERVICE]
    assert service["build"]["context"] == "."
    assert (REPO / service["build"]["dockerfile"]).is_file()


def env_example() -> list[tuple[str, str, bool]]:
    """(name, value, commented) for each NAME=value line of .env.example."""
    entries = []
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            entries.append((match.group(2), match.group(3), bool(match.group(1))))
    return entries


def test_env_example_names_real_options():
    entries = env_example()
    assert entries
    for name, _, _ in entries:
        assert name in proxy_env_names() | COMPOSE_ONLY, name
    assert ("OPENAI_API_KEY", "", False) in entries


def test_env_example_values_are_valid():
    env = {name: value for name, value, _ in env_example() if name not in COMPOSE_ONLY}
    env["OPENAI_API_KEY"] = "test-key-not-real"
    loaded = settings.load_settings([], environ=env)
    assert loaded.zeroconf == "wyoming-openai"


def test_env_is_ignored_by_git():
    assert ".env" in (REPO / ".gitignore").read_text().split()


# --- the standalone image ---------------------------------------------------------------------


def test_standalone_image():
    steps = instructions(REPO / "Dockerfile")
    keywords = [keyword for keyword, _ in steps]
    assert ("EXPOSE", "10300/tcp") in steps
    assert "HEALTHCHECK" in keywords
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["wyoming-openai"]') in steps
    copied = [rest.split()[-2] for keyword, rest in steps if keyword == "COPY" and "--from" not in rest]
    for source in copied:
        assert (REPO / source).exists(), source
    assert "app/" in copied


def test_dockerignore_keeps_what_the_image_copies():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for keyword, rest in instructions(REPO / "Dockerfile"):
        if keyword == "COPY" and "--from" not in rest:
            assert rest.split()[-2].rstrip("/") in kept


def test_health_probe_is_shared():
    """The standalone image and the add-on use the same probe."""
    probe = "wyoming_openai/rootfs/usr/local/bin/wyoming-ready"
    assert probe in (REPO / "Dockerfile").read_text()
    assert "/usr/local/bin/wyoming-ready" in (ADDON / "Dockerfile").read_text()


def test_deploy_docs_cover_the_files():
    text = (REPO / "docs" / "deploy.md").read_text()
    for path in all_files():
        assert path.name in text, path.name
    assert ".env.example" in text
    # The add-on installs from the store as a prebuilt image; a build of the folder needs app/ in it.
    assert "image:" in text and "cp -R app " in text
    assert re.search(r"^#+ Docker", text, re.MULTILINE)
    assert re.search(r"^#+ Home Assistant add-on", text, re.MULTILINE)
