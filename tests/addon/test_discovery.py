"""The discovery oneshot and the readiness probe (also the image's HEALTHCHECK), run for real.

A small Wyoming server made with the wyoming library stands in for the proxy, so the probe is
checked against the protocol's actual wire format.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest
from conftest import DISCOVERY_SCRIPT, READY_SCRIPT, requires_tools
from wyoming.event import async_read_event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info

pytestmark = requires_tools

INFO = Info(
    asr=[
        AsrProgram(
            name="wyoming-openai",
            description="test",
            attribution=Attribution(name="test", url="http://127.0.0.1/"),
            installed=True,
            version="1.0.0",
            models=[
                AsrModel(
                    name="whisper-1",
                    description="whisper-1",
                    attribution=Attribution(name="test", url="http://127.0.0.1/"),
                    installed=True,
                    languages=["en"],
                    version=None,
                )
            ],
        )
    ]
)


class FakeWyoming:
    """Answers describe with info (or with `reply`, or not at all)."""

    def __init__(self, reply: str | None = "info") -> None:
        self.reply = reply
        self.describes = 0
        self.server: asyncio.AbstractServer | None = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            event = await async_read_event(reader)
            if event is not None and event.type == "describe":
                self.describes += 1
                if self.reply == "info":
                    await async_write_event(INFO.event(), writer)
                elif self.reply is not None:
                    from wyoming.event import Event

                    await async_write_event(Event(type=self.reply, data={"text": "info"}), writer)
                else:
                    await asyncio.sleep(5)
        finally:
            writer.close()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def probe(*args: str, timeout: float = 15) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", str(READY_SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, out.decode()


async def test_probe_accepts_a_wyoming_server():
    server = FakeWyoming()
    port = await server.start()
    try:
        code, _ = await probe(f"127.0.0.1:{port}")
    finally:
        await server.stop()
    assert code == 0
    assert server.describes == 1


@pytest.mark.parametrize("reply", ["error", None])
async def test_probe_rejects_a_server_that_does_not_answer_info(reply):
    server = FakeWyoming(reply=reply)
    port = await server.start()
    try:
        code, out = await probe(f"127.0.0.1:{port}")
    finally:
        await server.stop()
    assert code == 1
    assert "no Wyoming info" in out


async def test_probe_rejects_a_closed_port():
    code, _ = await probe(f"127.0.0.1:{free_port()}")
    assert code == 1


async def test_probe_waits_for_a_late_server():
    port = free_port()
    server = FakeWyoming()
    waiting = asyncio.create_task(probe("--wait", "10", f"127.0.0.1:{port}"))
    await asyncio.sleep(1.2)
    await server.start(port)
    try:
        code, _ = await waiting
    finally:
        await server.stop()
    assert code == 0


def hostname() -> str:
    return subprocess.run(["hostname"], check=True, capture_output=True, text=True).stdout.strip()


async def test_discovery_announces_the_server(scripts, supervisor):
    server = FakeWyoming()
    port = await server.start()
    env = scripts.base_env(supervisor, log_level=7)
    env["DISCOVERY_READY_ADDRESS"] = f"127.0.0.1:{port}"
    try:
        result = await scripts.run(DISCOVERY_SCRIPT, env)
    finally:
        await server.stop()

    assert result.returncode == 0, result.output
    assert supervisor.discoveries == [{"service": "wyoming", "config": {"uri": f"tcp://{hostname()}:10300"}}]
    assert ("POST", "/discovery", "Bearer supervisor-token-not-real") in supervisor.requests
    assert "Sent the discovery information" in result.output


async def test_discovery_waits_until_the_server_answers(scripts, supervisor):
    port = free_port()
    server = FakeWyoming()
    env = scripts.base_env(supervisor)
    env["DISCOVERY_READY_ADDRESS"] = f"127.0.0.1:{port}"
    running = asyncio.create_task(scripts.run(DISCOVERY_SCRIPT, env))
    await asyncio.sleep(1.2)
    assert supervisor.discoveries == [], "announced before the server answered"
    await server.start(port)
    try:
        result = await running
    finally:
        await server.stop()
    assert result.returncode == 0, result.output
    assert len(supervisor.discoveries) == 1


async def test_discovery_gives_up_on_a_silent_server(scripts, supervisor):
    env = scripts.base_env(supervisor)
    env["DISCOVERY_READY_ADDRESS"] = f"127.0.0.1:{free_port()}"
    env["DISCOVERY_READY_TIMEOUT"] = "1"
    result = await scripts.run(DISCOVERY_SCRIPT, env)

    assert result.returncode != 0
    assert supervisor.discoveries == []
    assert "did not answer" in result.output


async def test_discovery_failure_is_reported(scripts, supervisor):
    server = FakeWyoming()
    port = await server.start()
    env = scripts.base_env(supervisor)
    env["DISCOVERY_READY_ADDRESS"] = f"127.0.0.1:{port}"
    env["SUPERVISOR_TOKEN"] = "wrong"
    try:
        result = await scripts.run(DISCOVERY_SCRIPT, env)
    finally:
        await server.stop()
    assert supervisor.discoveries == []
    assert "Could not send the discovery information" in result.output
    assert "port: 10300" in result.output
