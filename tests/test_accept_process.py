"""The accept process: while the serving process is busy, ``describe`` is still answered at once,
and every client is handed to the serving process with nothing lost, duplicated or reordered."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import threading
import time

import pytest
from harness import connect_while_busy, keep_busy, proxy_port, read_events
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import Synthesize

from wyoming_openai import accept_process
from wyoming_openai.framing import encode_event

pytestmark = pytest.mark.skipif(not accept_process.supported(), reason="the accept process runs on Linux only")

DESCRIBE = encode_event(Describe().event())


def describe_blocking(port: int, results: dict) -> None:
    """A client on its own thread, timing describe → info (the loop under test is stuck)."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(DESCRIBE)
        header = b""
        while not header.endswith(b"\n"):
            header += sock.recv(1)
        results["header"] = json.loads(header)
        results["elapsed"] = time.perf_counter() - began


async def test_describe_is_answered_while_the_serving_process_is_stuck(start_proxy):
    proxy = await start_proxy()
    results: dict = {}
    client = threading.Thread(target=describe_blocking, args=(proxy_port(proxy), results))
    client.start()
    keep_busy(1.5)
    client.join(5)
    assert results["header"]["type"] == "info"
    assert results["elapsed"] < 1.0  # Home Assistant gives up after about a second


async def test_a_client_that_goes_on_after_describe_is_served_in_order_without_a_second_info(start_proxy):
    proxy = await start_proxy()
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE)
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    writer.write(encode_event(Synthesize(text="Hello there.").event()) + DESCRIBE)
    events = await read_events(reader, "info")
    assert [e.type for e in events][0] == "audio-start"
    assert [e.type for e in events][-2:] == ["audio-stop", "info"]
    assert proxy.server.accept_process.clients_handed_over == 1
    writer.close()


async def test_a_request_that_arrives_while_busy_is_handed_over_whole(start_proxy):
    proxy = await start_proxy()
    reader, writer = await connect_while_busy(proxy_port(proxy), encode_event(Synthesize(text="Hello there.").event()))
    events = await read_events(reader, "audio-stop")
    assert events[0].type == "audio-start" and events[1].type == "audio-chunk"
    assert proxy.server.accept_process.clients_handed_over == 1
    writer.close()


async def test_a_client_silent_after_describe_is_handed_on_and_served(start_proxy):
    proxy = await start_proxy()
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE + DESCRIBE)
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    await asyncio.sleep(accept_process.HOLD_SECONDS + 0.5)  # now with the serving process
    assert proxy.server.accept_process.clients_handed_over == 1
    writer.write(encode_event(Ping(text="still here").event()) + DESCRIBE)
    events = await read_events(reader, "info")
    assert [(e.type, e.data.get("text")) for e in events] == [("pong", "still here"), ("info", None)]
    writer.close()


async def test_a_silent_client_still_times_out_from_when_it_was_last_heard(start_proxy):
    proxy = await start_proxy("--idle-timeout", "2")
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE)
    await read_events(reader, "info")
    heard = time.monotonic()
    events = await read_events(reader, "error")  # silent from here
    assert events[-1].data["code"] == "Timeout"
    # A second with the accept process, then with the serving process: not a second longer.
    assert time.monotonic() - heard < 2 + 0.9
    writer.close()


async def test_new_info_reaches_the_accept_process(start_proxy):
    proxy = await start_proxy()
    proxy.services.catalog.set_voices([("zed", None), ("ann", None)])
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE)
    (info,) = await read_events(reader, "info")
    assert [voice.name for voice in Info.from_event(info).tts[0].voices] == ["zed", "ann"]
    writer.close()


async def test_if_the_accept_process_ends_the_serving_process_goes_on(start_proxy, caplog):
    caplog.set_level(logging.WARNING)
    proxy = await start_proxy()
    helper = proxy.server.accept_process
    helper.process.kill()
    await asyncio.to_thread(helper.process.wait)
    for _ in range(100):  # the serving process notices the channel close
        if "accept process ended" in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert "the serving process accepts alone" in caplog.text
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
    writer.write(DESCRIBE + encode_event(Ping(text="on").event()))
    assert [e.type for e in await read_events(reader, "pong")] == ["info", "pong"]
    writer.close()


async def test_out_of_descriptors_it_pauses_and_the_serving_process_accepts_alone(start_proxy, caplog):
    caplog.set_level(logging.WARNING)
    proxy = await start_proxy()
    helper = proxy.server.accept_process
    pid = helper.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (0, limits[1]))  # no new descriptor: accept fails
    try:
        reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE, seconds=0.8)
        assert [e.type for e in await read_events(reader, "info")] == ["info"]
        writer.close()
        assert "cannot accept a client" in caplog.text and "pausing for 1 s" in caplog.text
        assert helper.clients_handed_over == 0 and helper.process.poll() is None
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    await asyncio.sleep(accept_process.ACCEPT_PAUSE + 0.2)  # then it steps in again
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE)
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    writer.write(encode_event(Ping(text="more").event()))  # asking for more: handed to the serving process
    assert [e.type for e in await read_events(reader, "pong")] == ["pong"]
    assert helper.clients_handed_over == 1
    writer.close()


async def test_it_can_be_turned_off(start_proxy):
    proxy = await start_proxy("--accept-process", "off")
    assert proxy.server.accept_process is None
    reader, writer = await connect_while_busy(proxy_port(proxy), DESCRIBE)
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    writer.close()


async def test_it_ends_with_the_server(start_proxy):
    proxy = await start_proxy()
    process = proxy.server.accept_process.process
    await proxy.server.stop(grace=0.1)
    assert process.poll() is not None
    assert proxy.server.accept_process is None


async def test_a_client_taken_before_it_sent_anything_is_served(start_proxy):
    proxy = await start_proxy()
    # Linux offers a silent client for accepting after a second (TCP_DEFER_ACCEPT): still busy then.
    reader, writer = await connect_while_busy(proxy_port(proxy), b"", seconds=1.5)
    writer.write(DESCRIBE + encode_event(Ping(text="late").event()))
    assert [e.type for e in await read_events(reader, "pong")] == ["info", "pong"]
    assert proxy.server.accept_process.clients_handed_over == 1
    writer.close()
