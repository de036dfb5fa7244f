"""The add-on's start-up chain with the real proxy: the run script's environment starts
`python -m wyoming_openai`, which answers the health probe and the discovery step, and no part
of the add-on's log (scripts and proxy, at TRACE) shows the key.

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

from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from conftest import DISCOVERY_SCRIPT, READY_SCRIPT, RUN_SCRIPT, requires_tools

pytestmark = requires_tools

KEY = "test-key-not-real-e2e-5b8e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    port = free_port()
    env = {
        name: value
        for name, value in started.env.items()
        if name not in ("SUPERVISOR_API", "SUPERVISOR_TOKEN", "CACHE_DIR", "RECORD_DIR", "LOG_LEVEL")
    }
    env["WYOMING_URI"] = f"tcp://127.0.0.1:{port}"
    proxy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wyoming_openai",
        env=env,
        cwd=tmp_path,  # not the repository root, where the add-on folder shadows the package
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        ready = await asyncio.create_subprocess_exec(
            "bash", str(READY_SCRIPT), "--wait", "30", f"127.0.0.1:{port}"
        )
        assert await asyncio.wait_for(ready.wait(), 40) == 0, "the proxy never answered describe"

        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 10)
        info = Info.from_event(event)
        assert [model.name for program in info.asr for model in program.models] == options["stt_models"]
        voices = [voice.name for program in info.tts for voice in program.voices]
        assert voices[:2] == ["nova", "alloy"]

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
