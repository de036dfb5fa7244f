"""Options (flags, OPENAI_API_* environment, YAML), the command line's exit codes, and zeroconf discovery."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from tone_wyoming import ToneServer, free_port
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from wyoming_openai.openai_api.__main__ import main
from wyoming_openai.openai_api.config import ConfigError, load
from wyoming_openai.openai_api.discovery import ZeroconfDiscovery
from wyoming_openai.openai_api.wyoming_pool import Timeouts, WyomingPool

URIS = "tcp://127.0.0.1:10200 tcp://127.0.0.1:10300"


def test_defaults_and_environment() -> None:
    settings = load([], {"OPENAI_API_WYOMING_URIS": "tcp://127.0.0.1:10200,tcp://piper:10200"})
    assert settings.wyoming_uris == ("tcp://127.0.0.1:10200", "tcp://piper:10200")
    assert (settings.host, settings.port, settings.api_keys, settings.cors_origins) == ("0.0.0.0", 8000, (), ())
    assert settings.max_upload_bytes == 25 * 1024 * 1024 and settings.zeroconf is False
    env = {
        "OPENAI_API_WYOMING_URIS": URIS, "OPENAI_API_PORT": "9000", "OPENAI_API_KEYS": "k1 k2",
        "OPENAI_API_CORS_ORIGINS": "https://a.example, *", "OPENAI_API_ZEROCONF": "yes",
        "OPENAI_API_MAX_UPLOAD_MB": "1.5", "OPENAI_API_CONNECT_TIMEOUT": "0.5", "OPENAI_API_READ_TIMEOUT": "9",
    }  # fmt: skip
    settings = load([], env)
    assert settings.port == 9000 and settings.api_keys == ("k1", "k2") and settings.zeroconf is True
    assert settings.cors_origins == ("https://a.example", "*") and settings.max_upload_bytes == int(1.5 * 1024 * 1024)
    assert (settings.connect_timeout, settings.read_timeout) == (0.5, 9.0)


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text("port: 7000\nhost: 127.0.0.1\nwyoming-uris: [tcp://a:1]\napi_keys: [file-key]\n")
    settings = load(["--config", str(config)], {})
    assert (settings.port, settings.host, settings.wyoming_uris, settings.api_keys) == (
        7000,
        "127.0.0.1",
        ("tcp://a:1",),
        ("file-key",),
    )
    settings = load(["--config", str(config)], {"OPENAI_API_PORT": "7100"})
    assert settings.port == 7100
    settings = load(["--config", str(config), "--port", "7200", "--zeroconf"], {"OPENAI_API_PORT": "7100"})
    assert settings.port == 7200 and settings.zeroconf is True
    assert load([], {"OPENAI_API_CONFIG": str(config)}).port == 7000


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--port", "http"], {}, "--port (OPENAI_API_PORT)"),
        (["--port", "70000"], {}, "--port (OPENAI_API_PORT)"),
        ([], {"OPENAI_API_WYOMING_URIS": "http://piper:10200"}, "--wyoming-uris (OPENAI_API_WYOMING_URIS)"),
        ([], {"OPENAI_API_WYOMING_URIS": "tcp://piper"}, "--wyoming-uris (OPENAI_API_WYOMING_URIS)"),
        (["--cors-origins", "example.com"], {}, "--cors-origins (OPENAI_API_CORS_ORIGINS)"),
        (["--zeroconf", "maybe"], {}, "--zeroconf (OPENAI_API_ZEROCONF)"),
        (["--max-upload-mb", "0"], {}, "--max-upload-mb (OPENAI_API_MAX_UPLOAD_MB)"),
        (["--read-timeout", "-1"], {}, "--read-timeout (OPENAI_API_READ_TIMEOUT)"),
        (["--log-level", "LOUD"], {}, "--log-level (OPENAI_API_LOG_LEVEL)"),
        ([], {"OPENAI_API_WYOMING_URIS": ""}, "--wyoming-uris (OPENAI_API_WYOMING_URIS) or enable --zeroconf"),
    ],
)
def test_bad_values_give_one_line_naming_flag_and_variable(argv: list[str], env: dict[str, str], names: str) -> None:
    env = {"OPENAI_API_WYOMING_URIS": URIS, **env}
    with pytest.raises(ConfigError) as caught:
        load(argv, env)
    message = str(caught.value)
    assert names in message and "\n" not in message


def test_keys_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    settings = load([], {"OPENAI_API_WYOMING_URIS": URIS, "OPENAI_API_KEYS": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    config = tmp_path / "api.yaml"
    config.write_text("api_keys: {sk-very-secret: 1}\n")
    with pytest.raises(ConfigError) as caught:
        load(["--config", str(config)], {"OPENAI_API_WYOMING_URIS": URIS})
    assert "sk-very-secret" not in str(caught.value) and "--api-keys (OPENAI_API_KEYS)" in str(caught.value)


def test_main_exit_codes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OPENAI_API_")]:
        monkeypatch.delenv(name)
    assert main(["--port", "nope", "--wyoming-uris", "tcp://a:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "wyoming-openai serve-openai: error: invalid --port (OPENAI_API_PORT): expected an integer, got 'nope'"
    )
    assert main([]) == 2 and "no Wyoming servers" in capsys.readouterr().err
    assert main(["--no-such-flag"]) == 2
    assert main(["--help"]) == 0 and "OPENAI_API_WYOMING_URIS" in capsys.readouterr().out


async def test_module_entry_serves_and_stops_on_sigterm(tone_server: ToneServer) -> None:
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEYS": "sk-cli-secret", "OPENAI_API_WYOMING_URIS": tone_server.uri}
    process = subprocess.Popen(
        [sys.executable, "-m", "wyoming_openai.openai_api", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer sk-cli-secret"}
                    ) as response:
                        body = await response.json()
                        break
                except aiohttp.ClientConnectionError:
                    assert process.poll() is None and time.monotonic() < deadline, "the API did not start"
                    await asyncio.sleep(0.1)
        assert "tone-tts" in {m["id"] for m in body["data"]}
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "1 API key(s)" in output and "sk-cli-secret" not in output


def test_port_in_use_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert (
            main(
                [
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--wyoming-uris",
                    "tcp://127.0.0.1:1",
                    "--connect-timeout",
                    "0.1",
                ]
            )
            == 1
        )
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# --- zeroconf, on loopback only -------------------------------------------------------------------


async def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_zeroconf_announced_servers_join_and_leave_the_pool(tone_server: ToneServer) -> None:
    announcer = AsyncZeroconf(interfaces=["127.0.0.1"])
    listener = AsyncZeroconf(interfaces=["127.0.0.1"])
    service = AsyncServiceInfo(
        "_wyoming._tcp.local.", "tones._wyoming._tcp.local.",
        addresses=[socket.inet_aton("127.0.0.1")], port=tone_server.port,
    )  # fmt: skip
    pool = WyomingPool([], Timeouts(connect=1, read=2), refresh_interval=0)
    discovery = ZeroconfDiscovery(pool, listener)
    try:
        await announcer.async_register_service(service)
        await discovery.start()
        await _wait_for(lambda: "tone-tts" in pool.catalog.tts)
        assert [s.uri for s in pool.servers] == [tone_server.uri]
        await announcer.async_unregister_service(service)
        await _wait_for(lambda: not pool.servers)
        assert not pool.catalog.tts
    finally:
        await discovery.stop()
        await listener.async_close()
        await announcer.async_close()
