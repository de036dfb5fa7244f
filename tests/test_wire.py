"""The wire: bounded reading, one-piece writing, and abusive clients that must not hurt anyone else."""

from __future__ import annotations

import asyncio
import json

import pytest
from harness import Client, proxy_port, until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wyoming.event import Event, async_read_event
from wyoming.info import Describe
from wyoming.ping import Ping
from wyoming.tts import Synthesize

from wyoming_openai.wire import ClientReader, Limits, ProtocolError, encode_event

LIMITS = Limits(max_event_bytes=4096, max_payload_bytes=8192)


def reader_with(data: bytes, reader: asyncio.StreamReader | None = None) -> asyncio.StreamReader:
    reader = reader or asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def parse(wire: bytes, cuts: list[int] = ()) -> list[Event]:
    """Every event in ``wire``, arriving in pieces cut at ``cuts`` while it is read; raises its error."""
    reader = ClientReader(LIMITS)
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]

    async def arrive() -> None:
        for start, end in zip(bounds, bounds[1:], strict=False):
            reader.feed_data(wire[start:end])
            await asyncio.sleep(0)  # the reader takes what has come so far
        reader.feed_eof()

    arriving = asyncio.ensure_future(arrive())
    events = []
    try:
        while (event := await reader.read_event()) is not None:
            events.append(event)
    finally:
        arriving.cancel()
    return events


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
events = st.builds(
    Event,
    type=st.text(min_size=1, max_size=30),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    payload=st.one_of(st.none(), st.binary(min_size=1, max_size=3000)),
)


# Repeated headers and data blocks, as Home Assistant's audio chunks: the reader parses them once.
audio_chunks = st.builds(
    lambda rate, audio: Event(type="audio-chunk", data={"rate": rate, "width": 2, "channels": 1}, payload=audio),
    st.sampled_from([16000, 22050]),
    st.binary(min_size=1, max_size=3000),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(events | audio_chunks, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
async def test_what_we_write_the_library_reads_and_so_do_we_however_it_is_cut(sequence, cuts):
    wire = b"".join(encode_event(e) for e in sequence)
    theirs = reader_with(wire)
    for sent in sequence:
        received = await async_read_event(theirs)
        assert (received.type, received.data, received.payload or None) == (sent.type, sent.data, sent.payload)
    ours = await parse(wire, cuts)
    assert [(e.type, e.data, e.payload) for e in ours] == [(e.type, e.data, e.payload) for e in sequence]


async def test_repeated_headers_give_each_event_its_own_data():
    chunk = Event(type="frame", data={"rate": 16000, "width": 2, "channels": 1}, payload=b"ab")
    inline = b'{"type": "x", "data": {"n": 1}}\n'
    first, second, third, fourth = await parse(encode_event(chunk) * 2 + inline * 2)
    first.data["rate"] = 8000
    third.data["n"] = 2
    assert second.data == {"rate": 16000, "width": 2, "channels": 1} and second.payload == b"ab"
    assert fourth.data == {"n": 1}


@settings(max_examples=300)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=5))
async def test_garbage_never_escapes_as_anything_but_protocol_error(data, cuts):
    try:
        await parse(data, cuts)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b'{"type": "audio-chunk", "payload_length": 999999999}\n', "payload_length 999999999 exceeds"),
        (b'{"type": "x", "data_length": 99999}\n', "data_length 99999 exceeds"),
        (b'{"type": "x", "data_length": -1}\n', "data_length is not a non-negative integer"),
        (b'{"type": "x", "payload_length": "12"}\n', "payload_length is not a non-negative integer"),
        (b"[1, 2]\n", "not a JSON object"),
        (b"not json\n", "not valid JSON"),
        (b'{"data": {}}\n', "no type"),
        (b'{"type": "x", "data": []}\n', "not a JSON object"),
        (b'{"type": "x", "data_length": 5}\n[1,2]', "event data is not a JSON object"),
        (b'{"type": "x", "payload_length": 10}\nshort', "in the middle of an event"),
        (b'{"type": "describe"', "in the middle of an event header"),
        (b'{"type": "' + b"x" * 5000 + b'"}\n', "longer than 4096"),
    ],
)
async def test_bad_framing_is_named(wire, message):
    with pytest.raises(ProtocolError, match=message):
        await parse(wire)


async def test_events_before_bad_framing_still_count():
    wire = encode_event(Describe().event()) + b"not json\n" + encode_event(Describe().event())
    reader = reader_with(wire, ClientReader(LIMITS))
    assert (await reader.read_event()).type == "describe"
    with pytest.raises(ProtocolError, match="not valid JSON"):
        await reader.read_event()


async def test_blank_lines_between_events_are_fine():
    wire = b"\n\n" + encode_event(Describe().event()) + b"\n"
    assert [e.type for e in await parse(wire)] == ["describe"]


async def raw_exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), wait)  # until the server closes
    writer.close()
    return received


def first_event(received: bytes) -> dict:
    header = json.loads(received.split(b"\n", 1)[0])
    data = json.loads(received.split(b"\n", 1)[1][: header.get("data_length", 0)] or b"{}")
    return {"type": header["type"], **data}


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (b'{"type": "audio-chunk", "payload_length": 999999999999}\n', "exceeds"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not valid JSON"),
        (
            b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 2}\nab',
            "audio-chunk without",
        ),
        (b'{"type": "audio-stop"}\n', "audio-stop without audio-start"),
        (b'{"type": "synthesize-stop"}\n', "synthesize-stop without synthesize-start"),
        (b'{"type": "synthesize", "data": {"text": 5}}\n', "malformed synthesize"),
        (b'{"type": "audio-start", "data": {"rate": 0, "width": 2, "channels": 1}}\n', "unsupported audio format"),
    ],
)
async def test_abusive_clients_get_an_error_and_a_close(start_proxy, wire, words):
    proxy = await start_proxy("--max-payload-bytes", "65536")
    received = await raw_exchange(proxy_port(proxy), wire)
    event = first_event(received)
    assert event["type"] == "error" and words in event["text"]
    async with Client(proxy_port(proxy)) as client:  # and the server still answers others
        await client.send(Describe().event())
        assert (await client.read()).type == "info"


async def test_unknown_events_are_ignored_like_the_protocol_says(start_proxy):
    proxy = await start_proxy()
    async with Client(proxy_port(proxy)) as client:
        await client.send(Event(type="select-program", data={"name": "x"}), Event(type="made-up"), Describe().event())
        assert (await client.read()).type == "info"


async def test_idle_and_slow_clients_are_cut_off(start_proxy):
    proxy = await start_proxy("--idle-timeout", "1")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
    for byte in b'{"ty':  # one byte at a time, and never the end of the header
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)
    received = await asyncio.wait_for(reader.read(), 3)
    assert first_event(received)["type"] == "error" and "idle" in first_event(received)["text"]
    writer.close()


async def pinged(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client the server has taken on (a ping asks more of it than describe), now idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_event(Ping(text="hello").event()))
    assert (await asyncio.wait_for(async_read_event(reader), 5)).type == "pong"
    return reader, writer


async def test_idle_connections_make_room_for_new_clients(start_proxy):
    proxy = await start_proxy("--max-connections", "3")
    held = [await pinged(proxy_port(proxy)) for _ in range(3)]
    async with Client(proxy_port(proxy)) as client:  # a fourth: the longest idle one gives way
        await client.send(Ping(text="me too").event())
        assert (await client.read()).type == "pong"
    evicted = await asyncio.wait_for(held[0][0].read(), 2)
    assert "closed to make room" in first_event(evicted)["text"]
    for _, writer in held:
        writer.close()


async def test_busy_connections_are_not_evicted(start_proxy, upstream):
    upstream.answer_delay = 1.0
    proxy = await start_proxy("--max-connections", "2")
    busy = []
    for _ in range(2):
        client = Client(proxy_port(proxy))
        await client.__aenter__()
        await client.send(Synthesize(text="Taking a while.").event())
        busy.append(client)
    await until(lambda: upstream.active_speech == 2)  # both in flight
    received = await raw_exchange(proxy_port(proxy), encode_event(Ping().event()))
    assert "too many connections" in first_event(received)["text"]
    # Home Assistant's describe is still answered before the refusal: a full proxy is not a dead one.
    async with Client(proxy_port(proxy)) as asking:
        await asking.send(Describe().event())
        assert [(await asking.read()).type, (await asking.read()).type] == ["info", "error"]
    for client in busy:  # and the busy ones are served in full
        await client.read_until("audio-stop")
        await client.__aexit__(None, None, None)


async def test_a_client_that_never_reads_is_pushed_back_not_buffered(start_proxy):
    proxy = await start_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
    batch = encode_event(Describe().event()) * 1000  # each answered with the whole info
    sent = 0
    with pytest.raises(TimeoutError):  # the proxy stops reading: the client's writes block
        while sent < 20 * 2**20:
            writer.write(batch)
            async with asyncio.timeout(2):
                await writer.drain()
            sent += len(batch)
    (handler,) = proxy.server.handlers
    assert handler.writer.transport.get_write_buffer_size() < 2**20  # and holds little of what it owes
    async with Client(proxy_port(proxy)) as client:  # while others are served
        await client.send(Describe().event())
        assert (await client.read()).type == "info"
    writer.close()
