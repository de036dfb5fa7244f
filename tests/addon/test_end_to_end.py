"""The add-on's start-up chain with the real proxy: the run script's environment starts
`python -m wyoming_openai`, which answers the health probe and the discovery step, and no part
of the add-on's log (scripts and proxy, at TRACE) shows the key. The same for the
OpenAI-compatible API: the openai-api run script's environment starts `serve-openai`.

Only the listening address differs from the add-on (127.0.0.1 and a free port instead of
0.0.0.0:10300); the upstreams are closed ports on 127.0.0.1, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import socket
import sys

import aiohttp
from conftest import API_RUN_SCRIPT, DISCOVERY_SCRIPT, READY_SCRIPT, RUN_SCRIPT, addon_info, requires_tools
from test_discovery import FakeWyoming
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

pytestmark = requires_tools

KEY = "test-key-not-real-e2e-5b8e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_as_recorded(started, tmp_path, **overrides: str) -> asyncio.subprocess.Process:
    """Run what the add-on's run script would have exec'd: its arguments, its environment (less
    the Supervisor's plumbing), with ``overrides``."""
    env = {
        name: value
        for name, value in started.env.items()
        if name not in ("SUPERVISOR_API", "SUPERVISOR_TOKEN", "CACHE_DIR", "RECORD_DIR", "LOG_LEVEL")
    }
    env.update(overrides)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wyoming_openai", *started.argv,
        env=env,
        cwd=tmp_path,  # not the repository root, where the add-on folder shadows the package
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def test_addon_start_up_chain(scripts, supervisor, addon_config, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    options = copy.deepcopy(addon_config["options"])
    options.update(
        stt_openai_url=closed,
        tts_openai_url=closed,
        stt_openai_key=KEY,
        tts_openai_key=KEY,
        stt_backend="openai",
        tts_backend="openai",
        tts_voices=["nova", "alloy"],
        log_level="trace",
    )
    supervisor.options = options
    started = await scripts.run(RUN_SCRIPT, scripts.base_env(supervisor, log_level=8))
    assert started.returncode == 0, started.output

    port, http_port = free_port(), free_port()
    assert started.env["WYOMING_HTTP_PORT"] == "8099"  # the ingress port; here a free one
    proxy = await start_as_recorded(
        started, tmp_path, WYOMING_URI=f"tcp://127.0.0.1:{port}", WYOMING_HTTP_PORT=str(http_port)
    )
    try:
        ready = await asyncio.create_subprocess_exec("bash", str(READY_SCRIPT), "--wait", "30", f"127.0.0.1:{port}")
        assert await asyncio.wait_for(ready.wait(), 40) == 0, "the proxy never answered describe"

        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 10)
        info = Info.from_event(event)
        assert [model.name for program in info.asr for model in program.models] == options["stt_models"]
        voices = [voice.name for program in info.tts for voice in program.voices]
        assert voices[:2] == ["nova", "alloy"]

        # The panel's page and /health, as ingress reaches them.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{http_port}/health") as response:
                health = await response.json()
            async with session.get(f"http://127.0.0.1:{http_port}/") as response:
                assert response.status == 200 and "Wyoming OpenAI" in await response.text()
        assert {u["direction"] for u in health["upstreams"]} == {"stt", "tts"}

        discovery_env = scripts.base_env(supervisor)
        discovery_env["DISCOVERY_READY_ADDRESS"] = f"127.0.0.1:{port}"
        announced = await scripts.run(DISCOVERY_SCRIPT, discovery_env)
        assert announced.returncode == 0, announced.output
        assert len(supervisor.discoveries) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            proxy.send_signal(signal.SIGTERM)
        try:
            proxy_output, _ = await asyncio.wait_for(proxy.communicate(), 20)
        except TimeoutError:
            proxy.kill()
            proxy_output, _ = await proxy.communicate()

    proxy_log = proxy_output.decode(errors="replace")
    assert "DEBUG" in proxy_log, "the proxy did not log at the chosen level"
    assert KEY not in started.output + proxy_log + announced.output


async def test_openai_api_start_up_chain(scripts, supervisor, addon_config, tmp_path):
    """The openai-api run script finds a Wyoming add-on through the fake Supervisor, and its
    environment starts the real `wyoming-openai serve-openai`, which lists that server's models
    to a client with the key, refuses one without, and never logs the key.

    The add-on's hostname is 127.0.0.1 here (a name like core-whisper resolves only on the
    Supervisor's network) and its Wyoming port a small Wyoming server of test_discovery."""
    wyoming = FakeWyoming()
    wyoming_port = await wyoming.start()
    whisper = addon_info("core_whisper", "Whisper", {f"{wyoming_port}/tcp": None})
    whisper["hostname"] = "127.0.0.1"
    supervisor.addons = {"core_whisper": whisper}
    options = copy.deepcopy(addon_config["options"])
    options.update(openai_api=True, openai_api_keys=[KEY], log_level="trace", openai_api_port=free_port())
    supervisor.options = options
    scripts.fake_sleep()
    started = await scripts.run(API_RUN_SCRIPT, scripts.base_env(supervisor, log_level=8))
    assert started.returncode == 0, started.output
    assert started.argv == ["serve-openai"]
    assert started.env["OPENAI_API_WYOMING_URIS"] == f"tcp://127.0.0.1:{wyoming_port}"

    api = await start_as_recorded(started, tmp_path, OPENAI_API_HOST="127.0.0.1")
    port = started.env["OPENAI_API_PORT"]
    try:
        models = None
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
                    ) as response:
                        if response.status == 200:
                            models = await response.json()
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
            assert models is not None, "the API never answered"
            async with session.get(f"http://127.0.0.1:{port}/v1/models") as response:
                assert response.status == 401
        assert "whisper-1" in [model["id"] for model in models["data"]]
    finally:
        with contextlib.suppress(ProcessLookupError):
            api.send_signal(signal.SIGTERM)
        try:
            api_output, _ = await asyncio.wait_for(api.communicate(), 20)
        except TimeoutError:
            api.kill()
            api_output, _ = await api.communicate()
        await wyoming.stop()

    api_log = api_output.decode(errors="replace")
    assert "DEBUG" in api_log, "the API did not log at the chosen level"
    assert KEY not in started.output + api_log
