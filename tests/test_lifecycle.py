"""The proxy as a process: quick start whatever the upstream does, clean stop, logs without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time

import pytest
from audio_samples import tone
from harness import APP, Client
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import async_read_event
from wyoming.info import Describe
from wyoming.tts import Synthesize

from wyoming_openai.wire import encode_event

KEY = "test-secret-key-7d2f9b"
URL_PASSWORD = "url-password-41c8e"


_launched: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
def kill_leftovers():
    """A failing test must not leave a proxy running."""
    yield
    while _launched:
        process = _launched.pop()
        if process.returncode is None:
            process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def launch(tmp_path, *flags: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wyoming_openai", "--uri", f"tcp://127.0.0.1:{port}", *flags,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(APP), **env},
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    _launched.append(process)
    return process, port


async def wait_for_info(port: int, limit: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        try:
            async with Client(port) as client:
                await client.send(Describe().event())
                event = await client.read(timeout=1.0)
                assert event is not None and event.type == "info"
                return time.monotonic() - began
        except OSError:
            await asyncio.sleep(0.02)
    raise AssertionError(f"no info within {limit} s")


async def stop(process: asyncio.subprocess.Process, limit: float = 8.0) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), limit)
    return process.returncode, output.decode()


async def test_serves_within_a_second_while_the_upstream_hangs_and_stops_on_sigterm(tmp_path, upstream):
    upstream.backend = "KOKORO_FASTAPI"
    upstream.probe_delay = 3600
    process, port = await launch(tmp_path, env={"STT_OPENAI_URL": upstream.url, "TTS_OPENAI_URL": upstream.url})
    await wait_for_info(port, 10)
    for _ in range(100):  # its probes of the upstream reach it, and hang there
        if upstream.probes_waiting:
            break
        await asyncio.sleep(0.05)
    assert upstream.probes_waiting > 0
    # It answers while they are still unanswered: serving never waits for them.
    assert await wait_for_info(port, 1.0) < 1.0
    assert upstream.probes_waiting > 0
    returncode, output = await stop(process)
    assert returncode == 0, output
    assert "Traceback" not in output


async def test_sigterm_lets_an_in_flight_request_finish(tmp_path, upstream):
    upstream.answer_delay = 1.0
    process, port = await launch(
        tmp_path, env={"STT_OPENAI_URL": upstream.url, "TTS_OPENAI_URL": upstream.url, "OPENAI_API_KEY": "k"}
    )
    upstream.key = "k"
    await wait_for_info(port, 10)
    async with Client(port) as client:
        await client.send(Synthesize(text="Finishing up.").event())
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        events = await client.read_until("audio-stop")
    assert events[0].type == "audio-start"
    output, _ = await asyncio.wait_for(process.communicate(), 8)
    assert process.returncode == 0, output


async def test_no_secret_in_any_output_at_trace_level(tmp_path, upstream):
    upstream.key = KEY
    config = tmp_path / "config.yaml"
    config.write_text(f"tts_openai_key: {KEY}\n")
    secret_url = upstream.url.replace("http://", f"http://admin:{URL_PASSWORD}@")
    log_file = tmp_path / "proxy.log"
    process, port = await launch(
        tmp_path, "--config", str(config), "--stt-openai-key", KEY, "--log-level", "TRACE",
        "--log-file", str(log_file), "--tts-voices", "alloy",
        env={"STT_OPENAI_URL": upstream.url, "TTS_OPENAI_URL": secret_url},
    )  # fmt: skip
    await wait_for_info(port, 10)
    async with Client(port) as client:  # STT works, with the key from the flag
        await client.send(
            Transcribe(language="en").event(),
            AudioStart(rate=16000, width=2, channels=1).event(),
            AudioChunk(rate=16000, width=2, channels=1, audio=tone(0.2, 16000)).event(),
            AudioStop().event(),
        )
        await client.read_until("transcript")
    async with Client(port) as client:  # TTS's URL carries credentials and the key is in the file
        await client.send(Synthesize(text="A secret-free log.").event())
        events = await client.read_until("audio-stop")
    returncode, output = await stop(process)
    assert returncode == 0
    everything = output + log_file.read_text() + "".join(str(e.data) for e in events)
    assert "TRACE" in output and "DEBUG" in output  # the run really was verbose
    for secret in (KEY, URL_PASSWORD):
        assert secret not in everything


async def test_json_log_lines(tmp_path, upstream):
    process, port = await launch(
        tmp_path, "--log-format", "json", env={"STT_OPENAI_URL": upstream.url, "TTS_OPENAI_URL": upstream.url}
    )
    await wait_for_info(port, 10)
    _, output = await stop(process)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any("serving on" in line["message"] for line in lines)


async def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wyoming_openai", "--uri", f"tcp://127.0.0.1:{port}",
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(APP)}, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        _launched.append(process)
        output, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 1
    assert "Cannot serve on" in output.decode() and "Traceback" not in output.decode()


async def test_several_workers_share_the_port_and_stop_together(tmp_path, upstream):
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wyoming_openai", "--uri", f"tcp://127.0.0.1:{port}", "--workers", "2",
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(APP), "STT_OPENAI_URL": upstream.url,
             "TTS_OPENAI_URL": upstream.url, "OPENAI_API_KEY": "k"},
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    _launched.append(process)
    upstream.key = "k"
    await wait_for_info(port, 15)
    await asyncio.sleep(1.0)  # both workers listening

    async def one() -> None:
        async with Client(port) as client:
            await client.send(Synthesize(text="Hello from a worker.").event())
            await client.read_until("audio-stop")

    await asyncio.gather(*(one() for _ in range(20)))
    returncode, output = await stop(process, 15)
    assert returncode == 0, output
    assert output.count("serving on") == 2  # two servers answered on one port
    assert "Traceback" not in output


async def test_stdio_serves_one_client_on_stdin_and_stdout(tmp_path, upstream):
    upstream.key = KEY
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wyoming_openai", "--uri", "stdio://",
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(APP), "STT_OPENAI_URL": upstream.url,
             "TTS_OPENAI_URL": upstream.url, "OPENAI_API_KEY": KEY},
        cwd=tmp_path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _launched.append(process)
    audio = tone(0.5, 16000)
    wire = b"".join(
        encode_event(e)
        for e in (
            Describe().event(),
            Transcribe(language="en").event(),
            AudioStart(rate=16000, width=2, channels=1).event(),
            *(
                AudioChunk(rate=16000, width=2, channels=1, audio=audio[i : i + 320]).event()
                for i in range(0, len(audio), 320)
            ),
            AudioStop().event(),
        )
    )
    for start in range(0, len(wire), 777):  # pieces that cut events anywhere
        process.stdin.write(wire[start : start + 777])
        await process.stdin.drain()
    received = []
    while not received or received[-1].type != "transcript":
        event = await asyncio.wait_for(async_read_event(process.stdout), 10)
        assert event is not None, "stdout ended early"
        received.append(event)
    assert [e.type for e in received] == ["info", "transcript"]
    assert received[1].data["text"].startswith(f"{len(audio) // 2} frames at 16000 Hz")  # all the audio arrived
    process.stdin.close()  # the client's end: the server stops
    await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0, (await process.stderr.read()).decode()
