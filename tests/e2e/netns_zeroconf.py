"""Zeroconf discovery, run inside a private network namespace by test_zeroconf.py.

Starts our proxy with --zeroconf and a Home Assistant with its zeroconf integration, both on the
namespace's loopback (multicast routed there), then drives Home Assistant's APIs: the discovered
flow must appear, name our server, and finish into a loaded entry with STT and TTS entities.
Prints one JSON line with what it saw; any failure is an exception (exit status 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e_stack import (  # noqa: E402
    LANGUAGES,
    VOICES,
    Process,
    describe,
    free_port,
    onboard,
    start_home_assistant,
    wait_for_http,
)  # fmt: skip
from ha_config import BASE_INTEGRATIONS  # noqa: E402
from harness import APP, TEST_KEY  # noqa: E402


async def main(workdir: Path, zeroconf_name: str) -> dict:
    port = free_port()
    proxy = Process("proxy zeroconf", workdir / "proxy-zeroconf.log")
    nowhere = "http://127.0.0.1:9/v1"  # no upstream in here: discovery needs none
    await proxy.start(
        sys.executable, "-m", "wyoming_openai", "--uri", f"tcp://127.0.0.1:{port}", "--zeroconf", zeroconf_name,
        "--stt-openai-url", nowhere, "--tts-openai-url", nowhere, "--stt-backend", "OPENAI", "--tts-backend", "OPENAI",
        "--languages", *LANGUAGES, "--tts-voices", *VOICES, "--log-level", "DEBUG",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(APP), "OPENAI_API_KEY": TEST_KEY},
        cwd=workdir,
    )  # fmt: skip
    ha = None
    session = aiohttp.ClientSession()
    try:
        deadline = time.monotonic() + 20
        while True:
            proxy.check_running()
            try:
                await describe(port)
                break
            except (OSError, TimeoutError, AssertionError):
                assert time.monotonic() < deadline, f"proxy did not answer:\n{proxy.log()[-3000:]}"
                await asyncio.sleep(0.1)
        ha = await start_home_assistant(workdir, (*BASE_INTEGRATIONS, "zeroconf"))
        ha.session = session
        await wait_for_http(ha)
        await onboard(ha)
        # Discovery starts a flow by itself; the UI lists it through flow/progress.
        deadline = time.monotonic() + 45
        async with ha.ws() as ws:
            while True:
                ha.process.check_running()
                flows = [f for f in await ws.call("config_entries/flow/progress") if f["handler"] == "wyoming"]
                if flows:
                    break
                assert time.monotonic() < deadline, f"no wyoming flow discovered:\n{ha.process.log()[-3000:]}"
                await asyncio.sleep(0.25)
        [flow] = flows
        # The user confirms, as in the UI.
        status, result = await ha.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {})
        assert status == 200, result
        entry_id = result["result"]["entry_id"] if result.get("type") == "create_entry" else None
        entities: list[str] = []
        deadline = time.monotonic() + 30
        async with ha.ws() as ws:
            while entry_id:
                registry = await ws.call("config/entity_registry/list")
                entities = sorted(e["entity_id"] for e in registry if e.get("config_entry_id") == entry_id)
                states = await ha.states()
                if entities and all(e in states and states[e]["state"] != "unavailable" for e in entities):
                    break
                assert time.monotonic() < deadline, f"entities did not come up: {entities}"
                await asyncio.sleep(0.25)
            entries = await ws.call("config_entries/get", domain="wyoming")
        return {
            "flow": {k: flow.get(k) for k in ("handler", "step_id", "context")},
            "result_type": result.get("type"),
            "entry": next((e for e in entries if e["entry_id"] == entry_id), None),
            "entities": entities,
        }
    finally:
        await session.close()
        for process in (ha.process if ha else None, proxy):
            if process is not None:
                await process.stop()


if __name__ == "__main__":
    outcome = asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
    print(json.dumps(outcome))
