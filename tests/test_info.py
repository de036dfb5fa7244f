"""describe → info: at once, whatever the upstream does, and reflecting what discovery found."""

from __future__ import annotations

import asyncio
import time

import pytest
from audio_samples import tone
from harness import TEST_KEY, URL_PASSWORD, Client, connect_while_busy, proxy_port, read_events
from upstream import Fault
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_openai.wire import encode_event


async def describe(port: int) -> tuple[Info, float]:
    async with Client(port) as client:
        began = time.perf_counter()
        await client.send(Describe().event())
        event = await client.read(timeout=1.0)  # Home Assistant gives up after about a second
        elapsed = time.perf_counter() - began
    assert event is not None and event.type == "info"
    return Info.from_event(event), elapsed


async def test_defaults_offer_openai_models_and_voices(start_proxy):
    proxy = await start_proxy(
        env={"STT_OPENAI_URL": "https://api.openai.com/v1", "TTS_OPENAI_URL": "https://api.openai.com/v1"}
    )
    info, _ = await describe(proxy_port(proxy))
    assert len(info.asr) == 1 and len(info.tts) == 1  # Home Assistant only looks at the first of each
    assert [m.name for m in info.asr[0].models] == ["gpt-4o-mini-transcribe", "whisper-1"]
    voices = [v.name for v in info.tts[0].voices]
    assert voices[:3] == ["alloy", "ash", "ballad"] and "nova" in voices and len(voices) == len(set(voices))
    assert info.asr[0].models[0].languages == ["en"]
    assert info.asr[0].version and info.tts[0].attribution.url == "https://api.openai.com/v1"
    assert not info.tts[0].supports_synthesize_streaming and not info.asr[0].supports_transcript_streaming


async def test_info_comes_at_once_while_the_upstream_hangs(start_proxy, upstream):
    upstream.backend = "KOKORO_FASTAPI"
    upstream.probe_delay = 3600
    proxy = await start_proxy(discovery=False)
    info, elapsed = await describe(proxy_port(proxy))
    assert elapsed < 0.1
    # Never a TTS program without voices: Home Assistant could not load its entity.
    assert "alloy" in [v.name for v in info.tts[0].voices]
    # Discovery gives up within its bound and falls back to OpenAI's voices.
    await asyncio.wait_for(proxy.discovery, 8)
    info, _ = await describe(proxy_port(proxy))
    assert "alloy" in [v.name for v in info.tts[0].voices]


async def test_voices_offered_before_discovery_give_way_to_the_discovered_ones(start_proxy, upstream):
    upstream.backend = "KOKORO_FASTAPI"
    upstream.probe_delay = 0.5
    proxy = await start_proxy(discovery=False)
    early, _ = await describe(proxy_port(proxy))
    assert [v.name for v in early.tts[0].voices][:2] == ["alloy", "ash"]
    async with Client(proxy_port(proxy)) as client:  # a voice the client names is used as it is meanwhile
        await client.send(Synthesize(text="Early bird.", voice=SynthesizeVoice(name="af_heart")).event())
        await client.read_until("audio-stop")
    assert upstream.requests[-1].json["voice"] == "af_heart"
    await asyncio.wait_for(proxy.discovery, 8)
    late, _ = await describe(proxy_port(proxy))
    assert [v.name for v in late.tts[0].voices] == ["af_heart", "am_adam"]


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("KOKORO_FASTAPI", ["af_heart", "am_adam"]),
        ("SPEACHES", ["af_heart", "am_adam"]),
        ("LOCALAI", ["gpt-4o-mini-tts", "tts-1"]),
        ("NONE", ["alloy", "ash"]),  # answers no probe: plain OpenAI-compatible
    ],
)
async def test_backend_detection_and_voice_discovery(start_proxy, upstream, backend, expected):
    upstream.backend = backend
    proxy = await start_proxy()
    info, _ = await describe(proxy_port(proxy))
    assert [v.name for v in info.tts[0].voices][: len(expected)] == expected
    assert proxy.services.transcriber.backend.value == (backend if backend != "NONE" else "OPENAI")


async def test_configured_voices_and_labels_win(start_proxy, upstream):
    upstream.backend = "KOKORO_FASTAPI"
    proxy = await start_proxy(
        "--tts-models", "kokoro", "--tts-voices", "af_bella", "af_sky",
        env={"TTS_VOICE_LABELS": "af_bella=Bella (warm), af_sky=Sky"},
    )  # fmt: skip
    info, _ = await describe(proxy_port(proxy))
    assert [(v.name, v.description) for v in info.tts[0].voices] == [("af_bella", "Bella (warm)"), ("af_sky", "Sky")]


async def test_streaming_flags_are_advertised(start_proxy):
    proxy = await start_proxy("--tts-streaming-models", "tts-1", "--stt-streaming-models", "gpt-4o-mini-transcribe")
    info, _ = await describe(proxy_port(proxy))
    assert info.tts[0].supports_synthesize_streaming and info.asr[0].supports_transcript_streaming


async def test_only_tts_or_only_stt(start_proxy):
    proxy = await start_proxy("--stt-models")
    info, _ = await describe(proxy_port(proxy))
    assert info.asr == [] and len(info.tts) == 1


async def test_credentials_in_urls_never_reach_info(start_proxy, upstream):
    secret_url = upstream.url.replace("http://", f"http://admin:{URL_PASSWORD}@")
    proxy = await start_proxy(env={"STT_OPENAI_URL": secret_url, "TTS_OPENAI_URL": secret_url})
    async with Client(proxy_port(proxy)) as client:
        await client.send(Describe().event())
        event = await client.read()
    text = str(event.data)
    assert URL_PASSWORD not in text and "admin" not in text and TEST_KEY not in text
    assert "***@127.0.0.1" in text


async def test_discovery_failure_falls_back_to_openai_voices(start_proxy, upstream):
    upstream.backend = "KOKORO_FASTAPI"
    upstream.voices = "not a list"  # type: ignore[assignment]
    proxy = await start_proxy()
    info, _ = await describe(proxy_port(proxy))
    assert "alloy" in [v.name for v in info.tts[0].voices]


async def test_ping_pong(start_proxy):
    from wyoming.ping import Ping

    proxy = await start_proxy()
    async with Client(proxy_port(proxy)) as client:
        await client.send(Ping(text="hi").event())
        event = await client.read()
    assert event.type == "pong" and event.data.get("text") == "hi"


async def test_speech_faults_do_not_touch_describe(start_proxy, upstream):
    upstream.speech_faults.append(Fault(silent=True))
    proxy = await start_proxy()
    _, elapsed = await describe(proxy_port(proxy))
    assert elapsed < 0.1


# The server idle when the client connects, or busy (the client waits in the accept queue).
BUSY = pytest.mark.parametrize("busy", [False, True], ids=["served at once", "while busy"])


@BUSY
@pytest.mark.parametrize(
    "describe",
    [Describe().event(), Event(type="describe", data={"reason": "with a data block"}, payload=b"and a payload")],
)
async def test_describe_and_what_follows_it_in_one_packet_are_served_in_order(start_proxy, upstream, describe, busy):
    proxy = await start_proxy()
    audio = tone(0.3, 16000)
    packet = b"".join(encode_event(e) for e in (
        describe,
        Transcribe(language="en").event(),
        AudioStart(rate=16000, width=2, channels=1).event(),
        AudioChunk(rate=16000, width=2, channels=1, audio=audio).event(),
        AudioStop().event(),
        Describe().event(),
    ))  # fmt: skip
    if busy:
        reader, writer = await connect_while_busy(proxy_port(proxy), packet)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
        writer.write(packet)
    events = await read_events(reader, "transcript") + await read_events(reader, "info")
    assert [e.type for e in events] == ["info", "transcript", "info"]
    assert events[1].data["text"].startswith(f"{len(audio) // 2} frames")
    writer.close()


@BUSY
async def test_describe_sent_after_a_pause_and_a_half_close_are_answered(start_proxy, busy):
    proxy = await start_proxy()
    wire = encode_event(Describe().event())
    if busy:
        reader, writer = await connect_while_busy(proxy_port(proxy), wire[:5])
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(proxy))
        await asyncio.sleep(0.2)  # the first read found nothing: the connection's own reading takes it
        writer.write(wire[:5])
        await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(wire[5:])
    writer.write_eof()
    assert [e.type for e in await read_events(reader, "info")] == ["info"]
    writer.close()


async def test_served_on_a_unix_socket(start_proxy, tmp_path):
    path = tmp_path / "wyoming.sock"
    await start_proxy("--uri", f"unix://{path}")
    async with AsyncClient.from_uri(f"unix://{path}") as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 5)
    assert event is not None and Info.from_event(event).tts
