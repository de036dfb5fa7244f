"""End-to-end fixtures: a real Home Assistant, our proxy as a process, and the upstream stand-in.

Home Assistant comes from tests/e2e/setup.sh (its own CPython 3.13 and venv under $E2E_HOME,
/opt/wyoming-openai-e2e by default). It is started once per session with a temporary config
directory, listening on 127.0.0.1 only, and driven only through its public HTTP and websocket APIs.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_stack import (  # noqa: E402
    STT_MODEL,
    TTS_MODEL,
    VOICES,
    HomeAssistant,
    Process,
    Stack,
    add_wyoming_server,
    home_assistant_or_skip,
    onboard,
    start_home_assistant,
    start_proxy,
    wait_for_http,
)  # fmt: skip
from harness import TEST_KEY, TEST_SECRETS  # noqa: E402
from upstream import FakeUpstream  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives a real Home Assistant (tests/e2e, needs tests/e2e/setup.sh)")


# --- fixtures ------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home_assistant_or_skip()
    workdir = tmp_path_factory.mktemp("e2e")
    upstream = FakeUpstream(key=TEST_KEY, backend="KOKORO_FASTAPI", voices=list(VOICES))
    await upstream.start()
    processes: list[Process] = []
    session = aiohttp.ClientSession()
    try:
        plain = await start_proxy("plain", upstream, workdir)
        processes.append(plain.process)
        streaming = await start_proxy(
            "streaming", upstream, workdir, "--tts-streaming-models", TTS_MODEL, "--stt-streaming-models", STT_MODEL
        )
        processes.append(streaming.process)
        ha = await start_home_assistant(workdir)
        processes.append(ha.process)
        ha.session = session
        await wait_for_http(ha)
        await onboard(ha)
        await add_wyoming_server(ha, plain)
        await add_wyoming_server(ha, streaming)
        stack = Stack(ha, upstream, plain, streaming, workdir)
        yield stack
    finally:
        await session.close()
        for process in reversed(processes):
            try:
                await process.stop()
            except AssertionError as err:
                print(err)
        await upstream.stop()
        print(f"\ne2e logs in {workdir}")
    # After a set-up and run that went through: what the processes logged.
    logs = "".join(process.log() for process in processes)
    leaked = [secret for secret in TEST_SECRETS if secret in logs]
    assert not leaked, f"secrets reached a process's log: {leaked}"
    assert not upstream.violations, f"requests broke the OpenAI spec: {upstream.violations}"
    # Home Assistant logged nothing wrong, except the failures the tests provoked on purpose.
    unexpected = stack.unexpected_log_records()
    assert not unexpected, "Home Assistant logged errors:\n" + "\n".join(unexpected[:10])
    for server in (plain, streaming):
        assert "Traceback" not in server.process.log(), (
            f"{server.process.name} logged a traceback ({server.process.log_path})"
        )


@pytest.fixture
def upstream(stack: Stack) -> FakeUpstream:
    """The session's stand-in, its faults and records cleared for this test (and checked after it)."""
    up = stack.upstream
    up.requests.clear()
    up.speech_faults.clear()
    up.transcription_faults.clear()
    up.transcript = None
    up.delay_for_text.clear()
    up.answer_delay = 0.0
    up.most_active_speech = 0
    yield up
    assert not up.violations, f"requests broke the OpenAI spec: {up.violations}"
    up.speech_faults.clear()
    up.transcription_faults.clear()


@pytest.fixture
def ha(stack: Stack) -> HomeAssistant:
    stack.ha.process.check_running()
    return stack.ha
