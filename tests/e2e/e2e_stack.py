"""End-to-end helpers: Home Assistant and our proxy as processes, Home Assistant's HTTP and websocket APIs.

Home Assistant comes from tests/e2e/setup.sh (its own CPython 3.13 and venv under $E2E_HOME,
/opt/wyoming-openai-e2e by default). It is started once per session with a temporary config
directory, listening on 127.0.0.1 only, and driven only through its public HTTP and websocket APIs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from ha_config import BASE_INTEGRATIONS  # noqa: E402
from harness import APP, TEST_KEY  # noqa: E402
from upstream import FakeUpstream  # noqa: E402

E2E_HOME = Path(os.environ.get("E2E_HOME", "/opt/wyoming-openai-e2e"))
HA_VENV = E2E_HOME / "venv"
HA_PYTHON = HA_VENV / "bin" / "python"
LANGUAGES = ("en", "de", "fr")
VOICES = ("af_heart", "am_adam")
TTS_MODEL = "tts-1"
STT_MODEL = "whisper-1"
CLIENT_ID = "http://127.0.0.1/e2e"  # any URL; onboarding and token exchange must use the same
EXPECTED_FAILURE = "This request fails upstream."  # the tests' text for a provoked failure (logged by HA)
OWNER = {"name": "E2E Owner", "username": "e2e", "password": "e2e-password-5b1d"}

_LOGGER = logging.getLogger("e2e")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def home_assistant_or_skip() -> Path:
    """The HA venv's interpreter; without it: a failure on CI (it must run there), a skip elsewhere."""
    if HA_PYTHON.exists() and (HA_VENV / ".e2e-installed").exists():
        return HA_PYTHON
    message = f"Home Assistant is not installed in {HA_VENV}: run `bash tests/e2e/setup.sh` (see tests/e2e/README.md)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- processes -------------------------------------------------------------------------------------


class Process:
    """A child process whose output goes to a file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *argv: str | os.PathLike[str], env: dict[str, str], cwd: Path) -> None:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *map(str, argv), env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}")

    async def stop(self, limit: float = 20.0) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), limit)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {limit} s of SIGTERM") from None


async def describe(port: int, timeout: float = 1.0) -> Info:
    client = AsyncTcpClient("127.0.0.1", port)
    await asyncio.wait_for(client.connect(), timeout)
    try:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            assert event is not None, "the proxy closed the connection instead of answering describe"
            if Info.is_type(event.type):
                return Info.from_event(event)
    finally:
        await client.disconnect()


@dataclass
class ProxyServer:
    name: str
    port: int
    process: Process
    flags: tuple[str, ...]
    entry_id: str = ""
    stt_entity: str = ""
    tts_entity: str = ""
    added_in: float = 0.0  # seconds the config flow and entities took


async def start_proxy(
    name: str, upstream: FakeUpstream, workdir: Path, *flags: str, voices: bool | tuple[str, ...] = True
) -> ProxyServer:
    """``python -m wyoming_openai`` as the add-on runs it; cwd outside the repo (its add-on folder shadows the package).

    Ready once it offers ``voices`` (VOICES, discovered from the stand-in, when True; any answer when False)."""
    expected = list(VOICES) if voices is True else list(voices or ())
    port = free_port()
    process = Process(f"proxy {name}", workdir / f"proxy-{name}.log")
    argv = (
        "--uri", f"tcp://127.0.0.1:{port}", "--stt-openai-url", upstream.url, "--tts-openai-url", upstream.url,
        "--languages", *LANGUAGES, "--stt-models", STT_MODEL, "--tts-models", TTS_MODEL,
        "--upstream-timeout", "6", "--upstream-read-timeout", "3", "--log-level", "DEBUG", *flags,
    )  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(APP), "OPENAI_API_KEY": TEST_KEY}
    await process.start(sys.executable, "-m", "wyoming_openai", *argv, env=env, cwd=workdir)
    server = ProxyServer(name, port, process, tuple(flags))
    # Ready when it answers describe with the voices it discovered from the stand-in (or at all).
    deadline = time.monotonic() + 20
    while True:
        process.check_running()
        try:
            info = await describe(port)
            if not expected or (info.tts and [v.name for v in info.tts[0].voices] == expected):
                return server
        except (OSError, TimeoutError, AssertionError):
            pass
        if time.monotonic() > deadline:
            await process.stop()
            raise AssertionError(f"proxy {name} did not offer {expected} within 20 s:\n{process.log()[-4000:]}")
        await asyncio.sleep(0.1)


# --- Home Assistant's APIs ---------------------------------------------------------------------------


class HomeAssistantError(Exception):
    pass


class WebSocket:
    """Home Assistant's websocket API: authenticated, one command at a time, with time-outs."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 1

    async def receive(self, timeout: float = 30.0) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise HomeAssistantError(f"websocket closed or sent {message.type}: {message.data!r}")
        return json.loads(message.data)

    async def send(self, command: str, **data: Any) -> int:
        message_id = self._next_id
        self._next_id += 1
        await self.ws.send_json({"id": message_id, "type": command, **data})
        return message_id

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def call(self, command: str, timeout: float = 30.0, **data: Any) -> Any:
        message_id = await self.send(command, **data)
        while True:
            message = await self.receive(timeout)
            if message.get("id") == message_id and message.get("type") == "result":
                if not message["success"]:
                    raise HomeAssistantError(f"{command}: {message['error']}")
                return message["result"]


class HomeAssistant:
    def __init__(self, url: str, config_dir: Path, process: Process) -> None:
        self.url = url
        self.config_dir = config_dir
        self.process = process
        self.token = ""
        self.session: aiohttp.ClientSession | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, timeout: float = 30.0, **kw: Any) -> tuple[int, Any]:
        assert self.session is not None
        kw.setdefault("headers", self.headers)
        async with self.session.request(
            method, self.url + path, timeout=aiohttp.ClientTimeout(total=timeout), **kw
        ) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, payload: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=payload, **kw)

    async def websocket(self) -> AsyncIterator[WebSocket]:
        assert self.session is not None
        async with self.session.ws_connect(self.url + "/api/websocket", max_msg_size=0) as raw:
            ws = WebSocket(raw)
            assert (await ws.receive())["type"] == "auth_required"
            await raw.send_json({"type": "auth", "access_token": self.token})
            answer = await ws.receive()
            assert answer["type"] == "auth_ok", answer
            yield ws

    def ws(self):
        return _WsContext(self)

    async def states(self) -> dict[str, dict[str, Any]]:
        status, states = await self.get("/api/states")
        assert status == 200, states
        return {state["entity_id"]: state for state in states}


class _WsContext:
    def __init__(self, ha: HomeAssistant) -> None:
        self._gen = ha.websocket()

    async def __aenter__(self) -> WebSocket:
        return await self._gen.__anext__()

    async def __aexit__(self, *exc: object) -> None:
        await self._gen.aclose()


def configuration_yaml(port: int, ffmpeg: str, integrations: tuple[str, ...]) -> str:
    lines = [
        "homeassistant:",
        "  name: E2E",
        "  latitude: 52.52",
        "  longitude: 13.40",
        "  elevation: 0",
        "  unit_system: metric",
        "  time_zone: UTC",
        "  country: DE",
        "  currency: EUR",
        "  language: en",
        f"  internal_url: http://127.0.0.1:{port}",
        "http:",
        "  server_host: 127.0.0.1",
        f"  server_port: {port}",
        "logger:",
        "  default: info",
        "  logs:",
        "    homeassistant.components.wyoming: debug",
        "    homeassistant.components.assist_pipeline: debug",
        "ffmpeg:",
        f"  ffmpeg_bin: {ffmpeg}",
    ]
    lines += [f"{name}:" for name in integrations if name not in ("ffmpeg", "http", "wyoming")]
    return "\n".join(lines) + "\n"


async def start_home_assistant(workdir: Path, integrations: tuple[str, ...] = BASE_INTEGRATIONS,
                               wrapper: tuple[str, ...] = ()) -> HomeAssistant:  # fmt: skip
    """Home Assistant core with a fresh config dir; returns once its HTTP API answers."""
    python = home_assistant_or_skip()
    config_dir = workdir / "ha-config"
    config_dir.mkdir(parents=True)
    # A streaming LLM agent of our own (custom_components/e2e_llm): set up only by the tests that add it.
    shutil.copytree(HERE / "custom_components", config_dir / "custom_components")
    port = free_port()
    ffmpeg = (HA_VENV / ".e2e-ffmpeg").read_text().strip()
    (config_dir / "configuration.yaml").write_text(configuration_yaml(port, ffmpeg, integrations))
    process = Process("home assistant", workdir / "home-assistant.out")
    env = {
        "PATH": f"{HA_VENV / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
    }
    await process.start(
        *wrapper, python, "-m", "homeassistant", "--config", config_dir, "--skip-pip", "--log-no-color",
        env=env, cwd=workdir,
    )  # fmt: skip
    ha = HomeAssistant(f"http://127.0.0.1:{port}", config_dir, process)
    return ha


async def wait_for_http(ha: HomeAssistant, limit: float = 120.0) -> None:
    began = time.monotonic()
    assert ha.session is not None
    while True:
        ha.process.check_running()
        try:
            async with ha.session.get(ha.url + "/api/onboarding", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    _LOGGER.info("Home Assistant answered after %.1f s", time.monotonic() - began)
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() - began > limit:
            raise AssertionError(
                f"Home Assistant's HTTP API did not answer within {limit} s:\n{ha.process.log()[-4000:]}"
            )
        await asyncio.sleep(0.25)


async def onboard(ha: HomeAssistant) -> None:
    """Create the owner through the onboarding API, as the frontend does, and trade the code for a token."""
    status, steps = await ha.get("/api/onboarding", headers={})
    assert status == 200, steps
    assert {"step": "user", "done": False} in steps, steps
    status, body = await ha.post(
        "/api/onboarding/users", {"client_id": CLIENT_ID, "language": "en", **OWNER}, headers={}
    )
    assert status == 200, body
    assert ha.session is not None
    async with ha.session.post(
        ha.url + "/auth/token",
        data={"grant_type": "authorization_code", "code": body["auth_code"], "client_id": CLIENT_ID},
    ) as response:
        tokens = await response.json()
        assert response.status == 200, tokens
    ha.token = tokens["access_token"]
    # The other steps as the frontend runs them, except core_config: that one adds integrations
    # which reach the internet (a weather service, an internet radio directory, Google's TTS).
    for step, payload in (("analytics", {}), ("integration", {"client_id": CLIENT_ID, "redirect_uri": CLIENT_ID})):
        status, body = await ha.post(f"/api/onboarding/{step}", payload)
        assert status in (200, 403), (step, status, body)  # 403: already done


async def add_wyoming_server(ha: HomeAssistant, server: ProxyServer, timeout: float = 30.0,
                             needs: tuple[str, ...] = ("stt", "tts")) -> None:  # fmt: skip
    """The config flow, as the UI runs it: handler wyoming, then host and port."""
    began = time.monotonic()
    status, flow = await ha.post(
        "/api/config/config_entries/flow", {"handler": "wyoming", "show_advanced_options": False}
    )
    assert status == 200, flow
    assert flow["type"] == "form" and flow["step_id"] == "user", flow
    assert {field["name"] for field in flow["data_schema"]} >= {"host", "port"}, flow
    answer = {"host": "127.0.0.1", "port": server.port}
    status, result = await ha.post(f"/api/config/config_entries/flow/{flow['flow_id']}", answer)
    assert status == 200, result
    assert result["type"] == "create_entry", result
    server.entry_id = result["result"]["entry_id"]
    # Its entities, from the entity registry, once they have a state.
    deadline = time.monotonic() + timeout
    async with ha.ws() as ws:
        while True:
            entities = await ws.call("config/entity_registry/list")
            mine = [e["entity_id"] for e in entities if e.get("config_entry_id") == server.entry_id]
            server.stt_entity = next((e for e in mine if e.startswith("stt.")), "")
            server.tts_entity = next((e for e in mine if e.startswith("tts.")), "")
            states = await ha.states()
            if all(getattr(server, f"{kind}_entity") in states for kind in needs):
                server.added_in = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no stt and tts entities for {server.name}: registry {mine}\n{ha.process.log()[-3000:]}"
                )
            await asyncio.sleep(0.2)


@dataclass
class Stack:
    ha: HomeAssistant
    upstream: FakeUpstream
    plain: ProxyServer
    streaming: ProxyServer
    workdir: Path
    expected_log: list[str] = field(default_factory=lambda: [EXPECTED_FAILURE])  # provoked on purpose

    def unexpected_log_records(self) -> list[str]:
        """Home Assistant's ERROR records and tracebacks, but those the tests provoked on purpose."""
        records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", self.ha.process.log())
        return [
            record for record in records
            if (" ERROR " in record.split("\n", 1)[0] or "Traceback" in record)
            and not any(expected in record for expected in self.expected_log)
        ]  # fmt: skip
