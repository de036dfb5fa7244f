"""Shared pieces for the add-on and Docker tests: paths, a fake Supervisor, a recorder for the proxy.

Nothing here needs Docker or a Supervisor: the add-on's real s6 scripts run under bash with a
bashio stand-in (tests/addon/bashio/) that talks HTTP to a small aiohttp Supervisor on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
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

requires_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq")),
    reason="the s6 scripts need bash, curl and jq",
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def addon_config() -> dict[str, Any]:
    return load_yaml(ADDON / "config.yaml")


@dataclass
class FakeSupervisor:
    """The two Supervisor endpoints bashio uses here, with what was asked of them."""

    options: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    discoveries: list[Any] = field(default_factory=list)
    fail_options: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/addons/self/options/config", self._options)
        app.router.add_post("/discovery", self._discovery)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SUPERVISOR_TOKEN}"

    async def _options(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, request.headers.get("Authorization")))
        if not self._authorized(request):
            return web.json_response({"result": "error", "message": "Unauthorized"}, status=401)
        if self.fail_options:
            return web.json_response({"result": "error", "message": "broken"}, status=500)
        return web.json_response({"result": "ok", "data": self.options})

    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, request.headers.get("Authorization")))
        if not self._authorized(request):
            return web.json_response({"result": "error", "message": "Unauthorized"}, status=401)
        self.discoveries.append(json.loads(await request.read()))
        return web.json_response({"result": "ok", "data": {"uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}})


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

    async def run(
        self, script: Path, env: dict[str, str], *args: str, timeout: float = 60.0
    ) -> ScriptResult:
        for name in ("env", "argv"):
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


